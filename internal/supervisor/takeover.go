//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/takeover"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// The takeover between two supervisors (a blue/green deploy: two
// containers sharing the directory of the control socket), both sides,
// over internal/takeover's exchange. The giver hands every -listen socket
// and its control socket; the taker binds from them as from a socket
// activation, starts its first instance over them, and says ready once
// that instance is; the giver then confirms and stops as on SIGTERM: its
// instances drain, it exits, and it leaves the socket files, which the
// taker holds now, in place.

// ErrTakeoverRunning refuses a takeover or an upgrade while a takeover
// waits for its taker.
var ErrTakeoverRunning = errors.New("tcpgrace run: a takeover is in progress")

// takeover answers a takeover request on the control socket.
func (c *controlSocket) takeover(req control.Request, peer control.Peer, conn net.Conn) *control.Reply {
	s := c.s
	ctx, cancel := req.Context(context.Background())
	defer cancel()
	begin := time.Now()
	var files []*os.File
	var env *wire.Env
	var err error
	if derr := s.do(ctx, func() { files, env, err = s.giveSockets() }); derr != nil {
		err = derr
	}
	if err != nil {
		s.log.Warn("takeover refused", "taker", peer.PID, "err", err)
		return errorReply(fmt.Errorf("tcpgrace run: takeover: %w", err))
	}
	err = s.handTo(ctx, conn, peer, files, env)
	s.do(context.Background(), func() { s.takeoverEnded(err) })
	if err != nil {
		s.log.Error("takeover failed: serving on", "taker", peer.PID, "err", err)
		return control.FailReply(fmt.Errorf("tcpgrace run: takeover: %w", err))
	}
	return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{
		PID: peer.PID, Generation: env.Generation, OldPID: os.Getpid(),
		HandoffMS: float64(time.Since(begin).Microseconds()) / 1000, PIDNamespace: control.PIDNamespace()}}
}

// giveSockets, run by the loop, marks a takeover as running and returns
// duplicates of the sockets and the value that names them (the ready
// pipe is not in it yet). It refuses while the supervisor stops, an
// instance starts, or another takeover runs.
func (s *Supervisor) giveSockets() ([]*os.File, *wire.Env, error) {
	switch {
	case s.stopping:
		return nil, nil, ErrStopping
	case s.starting != nil:
		return nil, nil, ErrUpgradeInProgress
	case s.givingTo:
		return nil, nil, ErrTakeoverRunning
	case s.taken != nil && !s.told:
		return nil, nil, fmt.Errorf("%w: this supervisor is still taking the sockets over", ErrTakeoverRunning)
	}
	env := &wire.Env{Generation: s.nextGen + 1, ReadyFD: wire.ListenFDsStart}
	var files []*os.File
	add := func(name, network, address string, fd int) error {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("duplicating %s's fd %d: %w", name, fd, err)
		}
		files = append(files, os.NewFile(uintptr(dup), name))
		env.Entries = append(env.Entries, wire.Entry{Name: name, FD: wire.ListenFDsStart + len(files),
			Network: network, Address: address})
		return nil
	}
	for _, sk := range s.socks {
		if err := add(sk.Name, sk.Network, sk.Address, sk.fd); err != nil {
			closeAll(files)
			return nil, nil, err
		}
		if sk.owned != nil {
			env.Owned = append(env.Owned, wire.UnixFile{Name: sk.Name, FileID: *sk.owned})
		}
	}
	if c := s.ctl; c != nil {
		fd, err := c.fd()
		if err == nil {
			err = add(controlName, "unix", c.path, fd)
		}
		if err != nil {
			closeAll(files)
			return nil, nil, err
		}
		if c.owned != nil {
			env.Owned = append(env.Owned, wire.UnixFile{Name: controlName, FileID: *c.owned})
		}
	}
	s.givingTo = true
	s.emit(event.Event{Kind: event.UpgradeRequested, Reason: "takeover request"})
	return files, env, nil
}

// handTo hands files to the taker at the other end of conn with its
// readiness pipe, and waits up to Config.ReadyTimeout for its ready.
func (s *Supervisor) handTo(ctx context.Context, conn net.Conn, peer control.Peer, files []*os.File, env *wire.Env) error {
	r, w, err := os.Pipe()
	if err != nil {
		closeAll(files)
		return fmt.Errorf("readiness pipe: %w", err)
	}
	defer r.Close()
	if fi, err := w.Stat(); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			env.Pipe = st.Ino
		}
	}
	all := append([]*os.File{w}, files...)
	offer := control.TakeoverOffer{PID: os.Getpid(), Generation: env.Generation, PIDNamespace: control.PIDNamespace()}
	if err := takeover.Give(ctx, conn, offer, env.Encode(os.Getpid()), all); err != nil {
		closeAll(all)
		return err
	}
	s.log.Info("takeover: sockets handed to the taker", "taker", peer.PID, "taker_uid", peer.UID, "sockets", len(env.Entries))
	if err := takeover.WaitReady(ctx, r, s.cfg.ReadyTimeout); err != nil {
		return err
	}
	if err := takeover.Confirm(conn); err != nil {
		return fmt.Errorf("confirming to the taker: %w", err)
	}
	return nil
}

// takeoverEnded, run by the loop, ends a takeover: on success the
// supervisor leaves the socket files to the taker and stops as on
// SIGTERM; on failure it serves on.
func (s *Supervisor) takeoverEnded(err error) {
	s.givingTo = false
	if err != nil {
		s.emit(event.Event{Kind: event.UpgradeEnded, Err: err})
		return
	}
	for _, sk := range s.socks {
		sk.owned = nil // the taker holds them now: the files stay
	}
	if s.ctl != nil {
		s.ctl.owned = nil
	}
	s.emit(event.Event{Kind: event.UpgradeEnded})
	s.log.Info("takeover done: the taker serves; draining")
	s.stopBy(unix.SIGTERM, "taken over")
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// takeFrom is New's takeover: it takes the sockets of the supervisor
// whose control socket is at path, or, if nothing serves there, returns
// inh (a cold start).
func (s *Supervisor) takeFrom(path string, inh *wire.Files) (*wire.Files, error) {
	if inh.Source() == wire.EnvListenFDs {
		return nil, fmt.Errorf("-takeover %s: the supervisor got sockets from systemd (LISTEN_FDS); it takes them either from systemd or from a running supervisor, not both", path)
	}
	tk, err := takeover.Take(context.Background(), path)
	if errors.Is(err, takeover.ErrNobody) {
		s.log.Info("takeover: nobody serves there; binding the sockets", "path", path, "err", err)
		return inh, nil
	}
	if err != nil {
		return nil, fmt.Errorf("-takeover %s: %w", path, err)
	}
	if tk.Offer.PIDNamespace == "" || tk.Offer.PIDNamespace != control.PIDNamespace() {
		tk.Env.Older = nil
	}
	files, err := wire.Open(tk.Env)
	if err != nil {
		tk.Close()
		return nil, fmt.Errorf("-takeover %s: %w", path, err)
	}
	s.taken, s.takenFiles = tk, files
	s.log.Info("takeover: took the sockets", "from", tk.Offer.PID, "sockets", len(tk.Env.Entries))
	return files, nil
}

// tellGiver says ready to the supervisor this one took the sockets from,
// once its first instance is ready, and waits for its confirmation. A
// giver that gave up meanwhile makes this supervisor stop (Run then
// returns 1); one that is gone leaves it serving alone.
func (s *Supervisor) tellGiver() {
	if s.taken == nil || s.told {
		return
	}
	tk := s.taken
	s.told = true
	if err := s.takenFiles.Ready(); err != nil && !errors.Is(err, syscall.EPIPE) {
		s.log.Warn("takeover: telling the old supervisor we are ready", "err", err)
	}
	err := tk.Verdict(takeover.ReplyTimeout)
	switch {
	case err == nil:
		s.log.Info("takeover: the old supervisor confirmed; serving", "old", tk.Offer.PID)
		s.ownTaken()
	case errors.Is(err, takeover.ErrGiverGone):
		s.log.Warn("takeover: the old supervisor is gone; serving alone", "old", tk.Offer.PID)
		s.ownTaken()
	default:
		s.log.Error("takeover: the old supervisor gave up; stopping", "err", err)
		s.gaveUp = true
		s.stopBy(unix.SIGTERM, "takeover given up")
	}
}

// ownTaken makes the Unix socket files the old supervisor had bound this
// one's, once the takeover stands: it removes them when it closes the
// sockets for good. Before, a taker that fails leaves them to the old
// supervisor, which still serves on them.
func (s *Supervisor) ownTaken() {
	for _, sk := range s.socks {
		if f, ok := s.takenFiles.Owned(sk.Name); ok && sk.owned == nil {
			sk.owned = &f.FileID
		}
	}
	if f, ok := s.takenFiles.Owned(controlName); ok && s.ctl != nil && s.ctl.owned == nil {
		s.ctl.owned = &f.FileID
	}
}

// failTakeover tells the supervisor this one is taking the sockets from
// that it will not become ready, and why.
func (s *Supervisor) failTakeover(why error) {
	if s.taken != nil && !s.told {
		s.takenFiles.Fail(why)
		s.told = true
	}
}
