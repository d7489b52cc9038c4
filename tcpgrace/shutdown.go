package tcpgrace

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/bind"
	"github.com/tcpgrace/tcpgrace/internal/errjoin"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/pidfile"
	"github.com/tcpgrace/tcpgrace/internal/text"
)

// Shutdown ends this generation gracefully. In order it: tells its parent
// generation, if that still watches it ([Options.ReadyGrace]), that it
// leaves on purpose (so that its exit, whatever the status, makes no
// rollback), cancels a running Upgrade (the child is killed), closes every
// registered listener (releasing sockets and Unix socket files unless a
// next generation took them over; after a hand-off, it waits until their
// fds are closed), removes the PID file if it still holds this pid, closes
// [Upgrader.Exit], stops reading on every packet conn, then waits until
// every connection accepted through the registry's listeners is closed, or
// ctx ends, and last closes the packet conns: replies to datagrams already
// read can be written until then.
//
// At ctx's end it closes the remaining connections and returns ctx's error
// (joined with any close errors). It blocks until then. Calling it twice,
// or after Close, is safe. Afterwards Listen and Upgrade fail with
// [ErrClosed].
func (u *Upgrader) Shutdown(ctx context.Context) error {
	return u.shutdown(ctx, time.Now(), u.Stats().Active)
}

// beginDrain notes ctx as the drain's, unless a drain began before, and,
// in a generation that handed over, begins its reports to the serving
// one. Run and RunHTTP call it before their server's own shutdown, so
// that what the server cuts at the deadline is counted.
func (u *Upgrader) beginDrain(ctx context.Context, handedOff bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.drainCtx == nil {
		u.drainCtx = ctx
	}
	if u.reports == nil && handedOff {
		u.reports = u.mail.report(u)
	}
}

// drainReports is the reporter beginDrain began, if any.
func (u *Upgrader) drainReports() *reporter {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reports
}

// countCut is the number of connections cut at this drain's deadline:
// forced, which Shutdown closed itself, or more if others (a server's
// Close) closed tracked connections after the deadline. Stats counts
// each as it closes (untrack).
func (u *Upgrader) countCut(forced int) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return max(forced, u.cutLate)
}

// noteLeave keeps why a Server loop ended, for the Stopping event.
func (u *Upgrader) noteLeave(why leaveReason) {
	u.mu.Lock()
	u.leaveWhy = why
	u.mu.Unlock()
}

// shutdown is Shutdown for a drain that began at begin with open
// connections (Run's began with its server's own shutdown): the
// "drained" line counts from there.
func (u *Upgrader) shutdown(ctx context.Context, begin time.Time, open int) error {
	st := u.stop("Shutdown")
	deadline, _ := ctx.Deadline()
	u.beginDrain(ctx, !st.wasServing)
	if st.first {
		u.emit(event.Event{Kind: event.Draining, Serving: st.wasServing, Deadline: deadline, Connections: open})
	}
	forced, err := u.waitConns(ctx)
	forced = u.countCut(forced)
	u.controlDone(ctx)
	err = errjoin.Join(st.err, err, closeSockets(st.packets))
	if st.first {
		u.emit(event.Event{Kind: event.Drained, Serving: st.wasServing, Took: time.Since(begin),
			Finished: open - forced, ForceClosed: forced, Moved: int(u.Stats().Moved), Err: err})
		u.drainReports().final(open-forced, forced)
	}
	u.handState(ctx)
	u.in.close()
	u.tickets.stop()
	u.mail.close()
	u.pidHeld.Swap(nil).Close()
	return err
}

// Close is Shutdown without the wait: open connections are closed at
// once. It returns the close errors, and is safe to call twice.
func (u *Upgrader) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st := u.stop("Close")
	open := u.Stats().Active
	u.beginDrain(ctx, !st.wasServing) // a drain of no time: what is open is cut
	forced, _ := u.waitConns(ctx)
	u.drainReports().final(open-forced, u.countCut(forced)) // a drain Run or RunHTTP began, cut short
	u.controlDone(ctx)
	u.handState(ctx)
	u.in.close()
	u.tickets.stop()
	u.mail.close()
	u.pidHeld.Swap(nil).Close()
	return errjoin.Join(st.err, closeSockets(st.packets))
}

// stopped is what stop did: its errors, the packet conns for the caller
// to close once its wait is over, and whether this generation was the
// serving one (not handed off) when it stopped.
type stopped struct {
	err        error
	packets    []*socket
	wasServing bool
	first      bool // the first call of Shutdown or Close
}

// stop is the part Shutdown and Close share: no more upgrades, no more
// listeners, no more reading. caller is "Shutdown" or "Close", the
// Stopping event's reason unless a Server loop ended first.
func (u *Upgrader) stop(caller string) stopped {
	u.leave()
	prev, sockets, paths := u.closeState()
	first, handedOff := prev != closed, prev == handedOff
	stream, packets := splitSockets(sockets)
	errs := []error{closeSockets(stream)}
	u.waitHandedClosed() // a hand-off's listeners, stopped and still being closed
	for _, p := range paths {
		p.Remove()
	}
	if first && !handedOff && u.opts.PIDFile != "" {
		if err := pidfile.Remove(u.opts.PIDFile, os.Getpid()); err != nil {
			errs = append(errs, fmt.Errorf("tcpgrace: %w", err))
		}
	}
	if first {
		u.emit(event.Event{Kind: event.Stopping, Serving: !handedOff, Reason: u.stopReason(handedOff, caller)})
	}
	u.closeExit()
	stopReading(packets) // after Exit: a read that fails finds Exit closed
	return stopped{err: errjoin.Join(errs...), packets: packets, wasServing: !handedOff, first: first}
}

// stopReason is why this generation stops: it handed over, or why its
// Server loop ended, or else who called (Shutdown, Close).
func (u *Upgrader) stopReason(handedOff bool, caller string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case handedOff:
		return string(leftUpgraded)
	case u.leaveWhy != "":
		return string(u.leaveWhy)
	}
	return caller
}

// closeState moves to closed, cancelling a running upgrade first and
// waiting until it has handed off or fallen back. It returns the state it
// left, the live sockets and the socket files this generation owned.
func (u *Upgrader) closeState() (prev state, sockets []*socket, paths []*bind.File) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cancelUpgradeLocked()
	sockets = u.liveSocketsLocked()
	for _, s := range sockets {
		if u.ownsPathLocked(s) {
			paths = append(paths, s.unix)
		}
	}
	prev = u.state
	u.moveLocked(closed)
	return prev, sockets, paths
}

// cancelUpgradeLocked cancels a running Upgrade and waits until it has
// handed off or fallen back. u.mu must be held; it is released while
// waiting.
func (u *Upgrader) cancelUpgradeLocked() {
	for u.state.upgradeRuns() {
		cancel, done := u.cancelUpgrade, u.upgradeDone
		u.mu.Unlock()
		cancel()
		<-done
		u.mu.Lock()
	}
}

// waitConns waits for the tracked connections to close; at ctx's end it
// closes the rest and returns how many, and ctx's error.
func (u *Upgrader) waitConns(ctx context.Context) (forced int, err error) {
	u.mu.Lock()
	if u.conns.len() == 0 {
		u.mu.Unlock()
		return 0, nil
	}
	if u.connsDone == nil {
		u.connsDone = make(chan struct{})
	}
	done := u.connsDone
	u.mu.Unlock()
	select {
	case <-done:
		return 0, nil
	case <-ctx.Done():
	}
	u.mu.Lock()
	open := u.conns.all()
	u.mu.Unlock()
	closed := 0
	for _, c := range open {
		if _, first := c.closeTracked(); first {
			closed++ // not closed meanwhile by its handler or another Shutdown
		}
	}
	if closed == 0 {
		return 0, nil // the last ones closed by themselves as the deadline passed
	}
	return closed, fmt.Errorf("tcpgrace: %s still open at the drain deadline, closed: %w",
		text.Count(closed, "connection", "connections"), ctx.Err())
}
