package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Upgrade starts the next generation from [Options.Executable] with the
// same arguments and hands it every registered socket. It blocks until
// the next generation calls Ready, fails, or ctx ends.
//
// On success this generation's listeners are closed: all at once, every
// Accept on them fails with net.ErrClosed. Their fds are closed right
// after, in the background; Shutdown and Close wait for that. The kernel
// sockets stay open in the next generation, so no queued connection is
// lost and none is refused. [Upgrader.Exit] is closed, and the caller
// should drain and exit. Connections already accepted are the caller's to finish. Packet
// conns stop reading but stay open until Shutdown or Close, so that
// replies to datagrams already read can still be written.
//
// On failure nothing changes. This generation keeps every socket and keeps
// serving. (A listener closed while the next generation is being started
// fails the upgrade, with its name: its fd is the one handed on.) The
// child has been killed and reaped, and no fd is left behind. A later
// Upgrade may try again. The error wraps [ErrChildFailed], with
// the child's reason or exit status, [ErrReadyTimeout], or ctx's error.
//
// Upgrade refuses to start, and changes nothing, in these cases:
//   - while another Upgrade runs: [ErrUpgradeInProgress];
//   - before Ready has returned: [ErrNotReady];
//   - after a successful Upgrade: [ErrUpgraded];
//   - after Shutdown or Close: [ErrClosed];
//   - when older generations still draining would make more than
//     [Options.MaxGenerations] alive: [ErrTooManyGenerations];
//   - as PID 1 of a PID namespace, whose exit would kill the next
//     generation: [ErrPID1].
//
// Shutdown and Close cancel a running Upgrade until the child says ready,
// as the end of ctx does; a ready word the child has written counts, read
// or not. After that, within [Options.ReadyGrace], both end the grace
// early and the hand-off stands: the child serves, and killing it would
// reset the connections it accepted.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	u.emit(event.Event{Kind: event.UpgradeRequested, Reason: requester(ctx)})
	if os.Getpid() == 1 {
		err := fmt.Errorf("%w: run it under an init that stays (docker run --init, tini) or a supervisor", ErrPID1)
		upgradeOver(ctx)
		u.emit(event.Event{Kind: event.UpgradeRefused, Err: err})
		return err
	}
	return u.handOver(ctx, u.runChild)
}

// starter starts the next generation over h (its copies of the sockets
// and channels, which it closes) and env, and waits until it is ready or
// failed (see waitReady): an exec'd child (runChild) or a taker
// (runTaker). It returns the next generation's pid.
type starter func(ctx context.Context, h *handed, env *wire.Env) (int, error)

// handOver is an upgrade once asked for: the sockets duplicated, the
// service's channels made, the next generation started by start; on
// success this generation hands off, on failure it serves on.
func (u *Upgrader) handOver(ctx context.Context, start starter) error {
	asked := ctx
	ctx, h, env, err := u.beginUpgrade(ctx)
	if err != nil {
		upgradeOver(asked)
		u.emit(event.Event{Kind: event.UpgradeRefused, Err: err})
		return err
	}
	begin := u.totals.begin()
	u.emit(event.Event{Kind: event.UpgradeStarted})
	u.handMail(h, env, begin)
	u.handTickets(h, env)
	channel := u.handChannel(h, env)
	pid, err := start(ctx, h, env)
	ended := event.Event{Kind: event.UpgradeEnded, Child: pid, Err: err, Took: time.Since(begin)}
	if err != nil {
		if channel != nil {
			channel.Close()
		}
		// Serving again before anyone hears of the failure: a request
		// that follows the "upgrade failed" line finds no upgrade running.
		u.endUpgrade(false)
		upgradeOver(ctx)
		u.emit(ended)
		return err
	}
	if channel != nil {
		u.out.Store(&outChannel{conn: channel}) // before Exit closes: the drain gives on it
	}
	u.emit(ended) // the service manager hears of the child before this generation leaves
	u.endUpgrade(true)
	upgradeOver(ctx)
	return nil
}

// beginUpgrade moves serving -> upgrading and lists every socket to hand on.
func (u *Upgrader) beginUpgrade(ctx context.Context) (context.Context, *handed, *wire.Env, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("tcpgrace: upgrade: %w", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.checkLocked(opUpgrade); err != nil {
		return nil, nil, nil, err
	}
	older := u.drainingOlder()
	if n, max := len(older)+2, u.opts.maxGenerations(); n > max {
		return nil, nil, nil, fmt.Errorf("%w: %d with the next one, limit %d (older generations still draining: %v)",
			ErrTooManyGenerations, n, max, older)
	}
	env := &wire.Env{Generation: u.Generation() + 1, ReadyFD: wire.ListenFDsStart, Older: older}
	live := u.liveSocketsLocked()
	env.Entries = make([]wire.Entry, 0, len(live))
	h := &handed{closing: &u.closing, fds: make([]handedFD, 0, len(live)+5)}
	for _, s := range live {
		env.Entries = append(env.Entries, wire.Entry{
			Name: s.name, FD: h.next(), Network: s.network, Address: s.address,
		})
		h.addSocket(s.raw, s.name, s.ln != nil)
		if s.foreign {
			env.Keep = append(env.Keep, s.name)
		}
		if s.unix != nil {
			// The file as it was bound, not as it is now: the next
			// generation's owner check follows the socket.
			env.Owned = append(env.Owned, wire.UnixFile{Name: s.name, FileID: s.unix.ID})
		}
	}
	u.mustMoveLocked(upgrading)
	ctx, cancel := context.WithCancel(ctx)
	u.cancelUpgrade, u.upgradeDone = cancel, make(chan struct{})
	return ctx, h, env, nil
}

// drainingOlder lists the older generations that are still alive.
func (u *Upgrader) drainingOlder() []int {
	var alive []int
	for _, pid := range u.inh.Older() {
		if proc.Alive(pid) {
			alive = append(alive, pid)
		}
	}
	return alive
}

// endUpgrade leaves the upgrading state: to handedOff on success
// (stopping this generation's listeners and closing their fds behind,
// stopping reads on its packet conns), back to serving on failure.
//
// The listeners stop at once, all together: a past deadline wakes every
// Accept, which then fails with net.ErrClosed (listener.Accept), with no
// system call. Their fds are closed after, on a goroutine that Shutdown
// and Close wait for. Closing one is two system calls (leaving the
// runtime's poller, close) and 5-7 µs here: with 256 listeners the last
// one accepted 1.2-2 ms after the next generation was ready, and Upgrade
// returned that much later (bench/RESULTS.md).
func (u *Upgrader) endUpgrade(ok bool) {
	u.mu.Lock()
	u.cancelUpgrade()
	close(u.upgradeDone)
	u.cancelUpgrade, u.upgradeDone = nil, nil
	if !ok {
		u.mustMoveLocked(serving)
		u.mu.Unlock()
		u.mail.read(u) // reports reach this generation again
		return
	}
	u.mustMoveLocked(handedOff)
	sockets := u.liveSocketsLocked()
	closed := make(chan struct{})
	u.handedClosed = closed
	u.mu.Unlock()
	u.leave() // said when the child said ready; a no-op by now, unless it exited first
	stream, packets := splitSockets(sockets)
	go u.closeStopped(stopAccepting(stream), closed)
	u.closeExit()
	stopReading(packets) // after Exit: a read that fails finds Exit closed
}

// stopAccepting makes every Accept on the listeners fail with
// net.ErrClosed from now on, without closing their fds, and returns the
// ones it stopped: not those a Shutdown closed meanwhile.
func stopAccepting(stream []*socket) []*socket {
	stopped := make([]*socket, 0, len(stream))
	for _, s := range stream {
		if !s.closedByUpgrader.CompareAndSwap(false, true) {
			continue
		}
		if d, ok := s.ln.Listener.(interface{ SetDeadline(time.Time) error }); ok {
			d.SetDeadline(pastDeadline) // wakes a waiting Accept, which sees closedByUpgrader
		}
		stopped = append(stopped, s)
	}
	return stopped
}

// closeStopped closes the fds of the listeners stopAccepting stopped,
// then closed.
func (u *Upgrader) closeStopped(stopped []*socket, closed chan struct{}) {
	defer close(closed)
	for _, s := range stopped {
		s.closeFD()
	}
}

// waitHandedClosed waits until closeStopped has closed the fds of the
// listeners a successful Upgrade stopped, if one did.
func (u *Upgrader) waitHandedClosed() {
	u.mu.Lock()
	closed := u.handedClosed
	u.mu.Unlock()
	if closed != nil {
		<-closed
	}
}

// leave tells this generation's parent, if it still watches (its
// ReadyGrace), that this generation leaves on purpose: it handed over, or
// it began to stop. Its exit is then no crash to roll back from, whatever
// its status. Only the first call says anything; a parent that no longer
// reads is no error.
func (u *Upgrader) leave() {
	if err := u.inh.Leave(); err != nil && !errors.Is(err, syscall.EPIPE) {
		u.log.Warn("telling the parent generation we leave", "err", err)
	}
	if u.taken != nil {
		u.taken.Close() // after the word: the giver reads it before the end of file
	}
}

// childReady moves upgrading -> grace: the next generation said ready.
// As far as this generation's own parent is concerned, it is leaving.
func (u *Upgrader) childReady(pid int) {
	u.leave()
	u.mu.Lock()
	u.moveLocked(grace) // from upgrading; waitReady alone (in tests) moves nothing
	u.mu.Unlock()
	u.emit(event.Event{Kind: event.ChildReady, Child: pid, Took: u.totals.sinceBegin()})
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
