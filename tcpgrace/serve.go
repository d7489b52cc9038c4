package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// Handler serves one accepted connection and closes it when done. ctx is
// cancelled when this generation starts draining (after a successful
// upgrade, a stop signal, or the end of Serve's context): a handler whose
// protocol has a clean way to end a connection (HTTP's "Connection:
// close", a goodbye message) should use it then; one that has none should
// keep serving until the peer closes, and is cut at the drain deadline.
type Handler func(ctx context.Context, c net.Conn)

// Accepted is one result of an accept goroutine.
type Accepted struct {
	Conn     net.Conn     // the connection, nil if Err is set
	Listener net.Listener // the listener it came from
	Err      error        // a permanent accept error (the listener is done)
}

// NotifySignals registers the default signal sets with signal.Notify and
// returns the channel to give to [Server.Signals]. Call it first thing in
// main, before [New]: Go kills a process on SIGTERM or SIGHUP that arrives
// before a handler is registered, and a new generation can be signalled as
// soon as it starts.
func NotifySignals() chan os.Signal {
	c := make(chan os.Signal, 1)
	all := slices.Concat(DefaultUpgradeSignals, DefaultStopSignals, DefaultReloadSignals)
	signal.Notify(c, all...)
	return c
}

// DefaultDrainTimeout is how long Serve waits for open connections.
const DefaultDrainTimeout = 30 * time.Second

// Server is the accept loop for raw TCP (and Unix) servers: accept
// goroutines feed a channel of [Accepted] connections, and one loop
// selects between them, signals, the upgrade's outcome and a context.
// Signal handling is opt-in: without Signals the loop reacts only to its
// context and to [Upgrader.Exit].
type Server struct {
	// Upgrader owns the listeners; required.
	Upgrader *Upgrader
	// Handler serves each connection; required.
	Handler Handler
	// Signals, if set, is read for upgrade, stop and reload signals; make
	// it with NotifySignals (or signal.Notify for other sets).
	Signals <-chan os.Signal
	// UpgradeSignals, StopSignals and ReloadSignals classify what arrives
	// on Signals. Defaults: DefaultUpgradeSignals, DefaultStopSignals,
	// DefaultReloadSignals.
	UpgradeSignals, StopSignals, ReloadSignals []os.Signal
	// Reload, if set, is run on a reload signal to reload configuration in
	// place (no new process); its error is logged. Without it a reload
	// signal is logged and ignored.
	Reload func() error
	// DrainTimeout bounds the wait for open connections when this
	// generation leaves. Default: DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Serve accepts on every listener and hands each connection to Handler in
// its own goroutine. It returns after this generation has drained: nil
// after a successful upgrade or a stop signal, ctx's error when ctx ends,
// and the drain error (connections cut at the deadline) joined to either.
// A failed upgrade is logged and serving goes on. Temporary accept errors
// (EMFILE, ENFILE, ECONNABORTED...) back off from 5 ms, doubling up to 1 s,
// and never end the loop.
func (s *Server) Serve(ctx context.Context, listeners ...net.Listener) error {
	if s.Upgrader == nil || s.Handler == nil || len(listeners) == 0 {
		return errors.New("tcpgrace: Server needs an Upgrader, a Handler and at least one listener")
	}
	u := s.Upgrader
	accepted := make(chan Accepted)
	stopAccept := make(chan struct{})
	defer close(stopAccept)
	for _, ln := range listeners {
		go acceptLoop(ln, accepted, stopAccept, u)
	}
	connCtx, draining := context.WithCancel(context.Background())
	defer draining()
	upgrading := false
	upgraded := make(chan error, 1)
	for {
		select {
		case a := <-accepted:
			if a.Err != nil {
				u.log.Error("accept stopped", "listener", a.Listener.Addr().String(), "err", a.Err)
				continue
			}
			go s.Handler(connCtx, a.Conn)
		case sig := <-s.Signals:
			switch {
			case slices.Contains(or(s.UpgradeSignals, DefaultUpgradeSignals), sig):
				if upgrading {
					u.log.Warn("upgrade signal ignored", "err", ErrUpgradeInProgress)
					continue
				}
				u.log.Info("upgrade signal", "signal", sig.String())
				upgrading = true
				go func() { upgraded <- u.Upgrade(ctx) }()
			case slices.Contains(or(s.StopSignals, DefaultStopSignals), sig):
				u.log.Info("stop signal", "signal", sig.String())
				return s.drain(nil, draining)
			case slices.Contains(or(s.ReloadSignals, DefaultReloadSignals), sig):
				s.reload(sig)
			}
		case <-upgraded:
			upgrading = false // the outcome is logged by Upgrade; success closes Exit
		case <-u.Exit():
			return s.drain(nil, draining)
		case <-ctx.Done():
			return s.drain(ctx.Err(), draining)
		}
	}
}

func (s *Server) reload(sig os.Signal) {
	log := s.Upgrader.log.With("signal", sig.String())
	if s.Reload == nil {
		log.Info("reload signal: no reload hook, ignored")
		return
	}
	if err := s.Reload(); err != nil {
		log.Error("reload failed", "err", err)
		return
	}
	log.Info("reloaded")
}

// drain tells handlers, then shuts the Upgrader down within DrainTimeout.
func (s *Server) drain(cause error, draining context.CancelFunc) error {
	draining()
	timeout := s.DrainTimeout
	if timeout <= 0 {
		timeout = DefaultDrainTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := s.Upgrader.Shutdown(ctx)
	if err != nil {
		s.Upgrader.log.Warn("drain", "err", err)
	}
	return errors.Join(cause, err)
}

// acceptLoop feeds accepted until ln is closed or stop is closed.
func acceptLoop(ln net.Listener, accepted chan<- Accepted, stop <-chan struct{}, u *Upgrader) {
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	delay := minDelay
	for {
		c, err := ln.Accept()
		switch {
		case err == nil:
			delay = minDelay
			select {
			case accepted <- Accepted{Conn: c, Listener: ln}:
			case <-stop:
				c.Close()
				return
			}
		case errors.Is(err, net.ErrClosed):
			return
		case isTemporary(err):
			u.log.Warn("accept: backing off", "listener", ln.Addr().String(), "delay", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-stop:
				return
			}
			delay = min(2*delay, maxDelay)
		default:
			select {
			case accepted <- Accepted{Listener: ln, Err: fmt.Errorf("tcpgrace: accept: %w", err)}:
			case <-stop:
			}
			return
		}
	}
}

// isTemporary reports accept errors worth waiting out: out of fds or
// memory, or a connection aborted before it was accepted.
func isTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func or[T any](v, def []T) []T {
	if len(v) > 0 {
		return v
	}
	return def
}
