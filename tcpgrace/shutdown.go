package tcpgrace

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-multierror"
)

// Shutdown ends this generation gracefully. In order it: tells its parent
// generation, if that still watches it ([Options.ReadyGrace]), that it
// leaves on purpose (so that its exit, whatever the status, makes no
// rollback), cancels a running Upgrade (the child is killed), closes
// every registered listener (releasing sockets and Unix socket files
// unless a next generation took them over), removes the PID file if it
// still holds this pid, closes [Upgrader.Exit], stops reading on every
// packet conn, then waits until every connection accepted through the
// registry's listeners is closed, or ctx ends, and last closes the packet
// conns: replies to datagrams already read can be written until then.
//
// At ctx's end it closes the remaining connections and returns ctx's error
// (joined with any close errors). It blocks until then. Calling it twice,
// or after Close, is safe. Afterwards Listen and Upgrade fail with
// [ErrClosed].
func (u *Upgrader) Shutdown(ctx context.Context) error {
	errs, packets := u.stop()
	sdDone := u.sdDraining(ctx)
	if err := u.waitConns(ctx); err != nil {
		errs = multierror.Append(errs, err)
	}
	sdDone()
	u.controlDone(ctx)
	return multierror.Append(errs, closeSockets(packets)).ErrorOrNil()
}

// Close is Shutdown without the wait: open connections are closed at
// once. It returns the close errors, and is safe to call twice.
func (u *Upgrader) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, packets := u.stop()
	u.waitConns(ctx)
	u.controlDone(ctx)
	return multierror.Append(errs, closeSockets(packets)).ErrorOrNil()
}

// stop is the part Shutdown and Close share: no more upgrades, no more
// listeners, no more reading; it returns the packet conns, which the
// caller closes once its wait is over.
func (u *Upgrader) stop() (*multierror.Error, []*socket) {
	u.leave()
	u.mu.Lock()
	first := u.state != stateClosed
	u.state = stateClosed
	cancel, done := u.cancelUpgrade, u.upgradeDone
	u.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	u.mu.Lock()
	handedOff := u.handedOff
	sockets := u.liveSocketsLocked()
	var paths []*unixPath
	for _, s := range sockets {
		if u.ownsPathLocked(s) {
			paths = append(paths, s.unix)
		}
	}
	u.mu.Unlock()
	stream, packets := splitSockets(sockets)
	errs := closeSockets(stream)
	for _, p := range paths {
		p.remove()
	}
	if first && !handedOff && u.opts.PIDFile != "" {
		if err := removePIDFile(u.opts.PIDFile, os.Getpid()); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if first {
		u.log.Info("shutting down", "handed_off", handedOff)
	}
	if first && !handedOff {
		u.sdStopping()
	}
	u.closeExit()
	stopReading(packets) // after Exit: a read that fails finds Exit closed
	return errs, packets
}

// waitConns waits for the tracked connections to close; at ctx's end it
// closes the rest and returns ctx's error.
func (u *Upgrader) waitConns(ctx context.Context) error {
	u.mu.Lock()
	if len(u.conns) == 0 {
		u.mu.Unlock()
		return nil
	}
	if u.connsDone == nil {
		u.connsDone = make(chan struct{})
	}
	done := u.connsDone
	u.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	u.mu.Lock()
	var open []*trackedConn
	for c := range u.conns {
		open = append(open, c)
	}
	u.mu.Unlock()
	closed := 0
	for _, c := range open {
		if _, first := c.closeTracked(); first {
			closed++ // not closed meanwhile by its handler or another Shutdown
		}
	}
	if closed == 0 {
		return nil // the last ones closed by themselves as the deadline passed
	}
	u.mu.Lock()
	u.forceClosed += uint64(closed)
	u.mu.Unlock()
	u.log.Warn("drain deadline: closed open connections", "closed", closed)
	return fmt.Errorf("tcpgrace: %d connections still open at the drain deadline, closed: %w", closed, ctx.Err())
}
