package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/errjoin"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/signals"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// Handler serves one accepted connection and closes it when done. ctx is
// cancelled when this generation starts draining (after a successful
// upgrade, a stop signal, or the end of Serve's context): a handler whose
// protocol has a clean way to end a connection (HTTP's "Connection:
// close", a goodbye message) should use it then; one that has none should
// keep serving until the peer closes, and is cut at the drain deadline.
type Handler func(ctx context.Context, c net.Conn)

// acceptResult is one result of an accept goroutine.
type acceptResult struct {
	Conn     net.Conn     // the connection, nil if Err is set
	Listener net.Listener // the listener it came from
	Err      error        // a permanent accept error (the listener is done)
}

// NotifySignals registers the default signal sets, plus extra, with
// signal.Notify and returns the channel to give to [Server.Signals]. Call
// it first thing in main, before [New]: Go ends a process on a SIGTERM,
// SIGINT or SIGHUP that arrives before a handler is registered (and
// ignores a SIGUSR1 or SIGUSR2), and a new generation can be signalled as
// soon as it starts.
//
// A signal that is not registered keeps its default action in a Go
// program: a Server whose UpgradeSignals, StopSignals or ReloadSignals
// name another signal than the defaults needs it in extra, e.g.
// NotifySignals(syscall.SIGUSR2) for nginx's upgrade signal. Unregistered,
// SIGUSR2 is ignored (the server silently never upgrades) and SIGQUIT
// ends the process. Serve, Run and RunHTTP log a warning at start for an
// upgrade or stop signal that Signals will never deliver.
//
// No signal is lost to another one: each signal number is registered on a
// channel of its own, and one goroutine, which lives as long as the
// process, merges them into the returned channel. A signal that arrives
// while the same one is still pending merges with it (the kernel does the
// same), so a burst of SIGHUP makes one pending SIGHUP and never crowds
// out the SIGTERM behind it; the default stop signals are passed on before any
// other pending signal, and kept twice (a second one cuts a drain short).
// Signals wait in that goroutine until the channel is read, so nothing is
// lost while a Server is busy between its loop and its drain. Give the
// channel to one Server at a time.
func NotifySignals(extra ...os.Signal) chan os.Signal {
	all := slices.Concat(defaultUpgradeSignals, defaultStopSignals, defaultReloadSignals, extra)
	ch := signals.Notify(nil, all, defaultStopSignals)
	notified.Store((<-chan os.Signal)(ch), all)
	return ch
}

// notified maps each channel NotifySignals made to the signals it
// registered, so that a Server can tell which of its signals never come.
var notified sync.Map

// checkSignals warns, as a loop starts, about an upgrade or stop signal
// of this Server that Signals will never deliver: not registered by
// NotifySignals, or Signals not made by it (then nothing is known).
func (s *Server) checkSignals() {
	if s.Signals == nil {
		return
	}
	v, ok := notified.Load(s.Signals)
	if !ok {
		s.Upgrader.log.Warn("Server.Signals was not made by NotifySignals: upgrade and stop signals arrive only if you registered them (Go ignores an unregistered SIGUSR1 or SIGUSR2)")
		return
	}
	for _, sig := range slices.Concat(or(s.UpgradeSignals, defaultUpgradeSignals), or(s.StopSignals, defaultStopSignals)) {
		if !slices.Contains(v.([]os.Signal), sig) {
			s.Upgrader.log.Warn(fmt.Sprintf("signal %s of this Server is not registered and will never arrive: pass it to NotifySignals",
				signalName(sig)))
		}
	}
}

// Server is the accept loop for raw TCP (and Unix) servers: accept
// goroutines feed a channel of accepted connections, and one loop
// selects between them, signals, the upgrade's outcome and a context.
// Signal handling is opt-in: without Signals the loop reacts only to its
// context and to [Upgrader.Exit].
type Server struct {
	// Upgrader owns the listeners; required.
	Upgrader *Upgrader
	// Handler serves each connection; required.
	Handler Handler
	// Signals, if set, is read for upgrade, stop and reload signals; make
	// it with NotifySignals. A channel of your own from signal.Notify
	// drops every signal that arrives while it is full: one with room for
	// a single signal loses a SIGTERM behind a burst of SIGHUP.
	Signals <-chan os.Signal
	// UpgradeSignals, StopSignals and ReloadSignals classify what arrives
	// on Signals. Defaults: SIGUSR1 upgrades, SIGTERM and SIGINT stop,
	// SIGHUP reloads, as in nginx except that nginx upgrades on SIGUSR2.
	// A signal named here that is not registered never reaches Signals and
	// keeps its default action, which in a Go program is to ignore SIGUSR1
	// and SIGUSR2 and to end the process on SIGQUIT: register it as one of
	// NotifySignals's extra signals (the loop warns at start otherwise).
	UpgradeSignals, StopSignals, ReloadSignals []os.Signal
	// Reload, if set, is run on a reload signal to reload configuration in
	// place (no new process); its error is logged. Without it a reload
	// signal is logged and ignored. It runs in a goroutine of its own, so
	// a slow reload delays neither accepting nor any other signal, and
	// runs of one Serve, Run or RunHTTP never overlap: reload signals that
	// arrive while it runs coalesce into one more run after it. A stop
	// signal does not wait for a running reload (nor runs the one still
	// owed): the drain starts at once, and the process may exit while the
	// hook still runs, so it must leave the configuration whole at any
	// point (write a new file and rename it, say).
	Reload func() error
	// DrainTimeout bounds the wait for open connections when this
	// generation leaves. Default: DefaultDrainTimeout.
	DrainTimeout time.Duration
	// IdleGrace is how long [Server.RunHTTP]'s drain lets a keep-alive
	// connection stay idle before closing it. Default: DefaultIdleGrace.
	IdleGrace time.Duration
}

// Serve accepts on every listener and hands each connection to Handler in
// its own goroutine. It returns after this generation has drained: nil
// after a successful upgrade, a stop signal or a stop request on the
// control socket ([Options.Control]), ctx's error when ctx ends,
// and the drain error (connections cut at the deadline) joined to either.
// While it drains, an upgrade signal is refused and logged, and a second
// stop signal cuts the drain short.
// On a stop signal or ctx's end it first cancels an upgrade still running
// (dispatching connections meanwhile), then keeps accepting until each
// listener's accept queue has been seen empty (at most a second), so that
// no connection the kernel already queued is reset when the listeners
// close; connections that arrive after that are refused.
// A failed upgrade is logged and serving goes on. Temporary accept errors
// (EMFILE, ENFILE, ECONNABORTED...) back off from 5 ms, doubling up to 1 s,
// and never end the loop.
func (s *Server) Serve(ctx context.Context, listeners ...net.Listener) error {
	if s.Upgrader == nil || s.Handler == nil || len(listeners) == 0 {
		return errors.New("tcpgrace: Server needs an Upgrader, a Handler and at least one listener")
	}
	if al := s.Upgrader.claimFor(listeners); al != nil {
		listeners = append(listeners, al) // the connections the previous generation hands over
	}
	l := s.start(listeners)
	defer l.draining()
	why, err := s.loop(ctx, l.accepted, l.dispatch)
	s.Upgrader.log.Info("draining", "reason", string(why))
	return l.drain(err, why.stop())
}

// loop dispatches accepted connections and carries out what signals and
// the control socket ask until this generation must leave: it returns nil
// after a successful upgrade, a stop signal or a stop request, ctx's error
// when ctx ends, and why it ended. It is
// the one place upgrades, reloads and stops of a served generation start,
// whoever asks. As it leaves it cancels an upgrade it still runs, then moves this
// generation to leaving, then answers a stop request.
func (s *Server) loop(ctx context.Context, accepted <-chan acceptResult, dispatch func(acceptResult)) (why leaveReason, err error) {
	u := s.Upgrader
	up := &loopUpgrade{u: u, done: make(chan error, 1)}
	reloads := &reloader{s: s, ended: make(chan struct{}, 1)}
	s.checkSignals()
	requests, endLoop := u.startLoop()
	var stopReply chan<- error
	defer func() {
		u.noteLeave(why)
		up.cancelRunning(accepted, dispatch)
		reloads.abandon()
		endLoop()
		if stopReply != nil {
			stopReply <- nil
		}
	}()
	for {
		select {
		case a := <-accepted:
			dispatch(a)
		case sig := <-s.Signals:
			if s.signal(ctx, sig, up, reloads) {
				return u.stopOnPurpose(leftStopSignal, "signal", signalName(sig))
			}
		case r := <-requests:
			if r.cmd == control.CmdStop {
				stopReply = r.reply
				return u.stopOnPurpose(leftStopRequest)
			}
			carryOut(r, up, reloads)
		case <-reloads.ended:
			reloads.finished()
		case err := <-up.done:
			up.ended(err) // the outcome is logged by Upgrade; success closes Exit
		case <-u.Exit():
			return leftUpgraded, nil
		case <-ctx.Done():
			return leftContext, ctx.Err()
		}
	}
}

// carryOut starts the upgrade or the reload a control request asks for;
// the request gets its outcome when it is over.
func carryOut(r request, up *loopUpgrade, reloads *reloader) {
	if r.cmd == control.CmdReload {
		reloads.request(r.reply)
		return
	}
	up.start(requestedBy(r.ctx, "control request"), r.reply)
}

// signal acts on sig in the loop and reports whether it is a stop.
func (s *Server) signal(ctx context.Context, sig os.Signal, up *loopUpgrade, reloads *reloader) (stop bool) {
	switch s.kind(sig) {
	case upgradeSignal:
		why := "signal " + signalName(sig)
		up.settle()
		if up.running() {
			s.Upgrader.refuse(why, ErrUpgradeInProgress)
			return false
		}
		s.Upgrader.log.Info("upgrade signal", "signal", signalName(sig))
		up.start(requestedBy(ctx, why), nil)
	case stopSignal:
		return true
	case reloadSignal:
		reloads.signal(sig)
	}
	return false
}

// leaveReason is why a Server loop ended, as the "draining" log line
// says it.
type leaveReason string

const (
	leftUpgraded    leaveReason = "upgraded"     // the next generation serves
	leftStopSignal  leaveReason = "stop signal"  // SIGTERM, SIGINT or Server.StopSignals
	leftStopRequest leaveReason = "stop request" // stop on the control socket
	leftContext     leaveReason = "context done" // the loop's context ended
)

// stop reports whether the loop ended on a stop.
func (r leaveReason) stop() bool { return r == leftStopSignal || r == leftStopRequest }

// stopOnPurpose logs the stop and tells a watching parent that this
// generation leaves on purpose: no rollback if the drain then fails.
func (u *Upgrader) stopOnPurpose(why leaveReason, args ...any) (leaveReason, error) {
	msg := string(why)
	if why == leftStopRequest {
		msg = "stop requested on the control socket"
	}
	u.log.Info(msg, args...)
	u.leave()
	return why, nil
}

// loopUpgrade is the upgrade a Server loop runs, at most one at a time,
// started by an upgrade signal or a control request.
type loopUpgrade struct {
	u      *Upgrader
	cancel context.CancelFunc // set while one runs
	waiter chan<- error       // the control request that started it, if one did
	over   chan struct{}      // closed by Upgrade once its outcome is settled (upgradeOver)
	done   chan error         // its outcome
}

func (l *loopUpgrade) running() bool { return l.cancel != nil }

// settle takes the outcome of an upgrade that is over, though its
// goroutine has not reported on l.done yet: Upgrade closed l.over and is
// returning. A request that follows an upgrade's end (its log line, its
// event) is then not refused as "in progress".
func (l *loopUpgrade) settle() {
	if !l.running() {
		return
	}
	select {
	case <-l.over:
		l.ended(<-l.done)
	default:
	}
}

// start runs Upgrade under ctx in a goroutine that reports on l.done;
// waiter, if not nil, gets the outcome. One already running refuses it.
func (l *loopUpgrade) start(ctx context.Context, waiter chan<- error) {
	l.settle()
	if l.running() {
		l.u.refuse(requester(ctx), ErrUpgradeInProgress)
		waiter <- ErrUpgradeInProgress
		return
	}
	ctx, l.cancel = context.WithCancel(ctx)
	l.over = make(chan struct{})
	ctx = context.WithValue(ctx, overKey{}, l.over)
	l.waiter = waiter
	go func() { l.done <- l.u.Upgrade(ctx) }()
}

// ended takes the outcome of the upgrade that ran.
func (l *loopUpgrade) ended(err error) {
	l.cancel()
	l.cancel = nil
	if l.waiter != nil {
		l.waiter <- err
		l.waiter = nil
	}
}

// cancelRunning cancels an upgrade still running when the loop leaves: a
// next generation not yet ready is killed. It dispatches connections
// until the upgrade has returned.
func (l *loopUpgrade) cancelRunning(accepted <-chan acceptResult, dispatch func(acceptResult)) {
	if l.running() {
		l.cancel()
		l.ended(waitUpgrade(l.done, accepted, dispatch))
	}
}

// signalKind is what a signal asks of a Server.
type signalKind int

const (
	otherSignal signalKind = iota
	upgradeSignal
	stopSignal
	reloadSignal
)

// kind classifies sig by the Server's signal sets, or their defaults.
func (s *Server) kind(sig os.Signal) signalKind {
	switch {
	case slices.Contains(or(s.UpgradeSignals, defaultUpgradeSignals), sig):
		return upgradeSignal
	case slices.Contains(or(s.StopSignals, defaultStopSignals), sig):
		return stopSignal
	case slices.Contains(or(s.ReloadSignals, defaultReloadSignals), sig):
		return reloadSignal
	}
	return otherSignal
}

// serveLoop is one run of Serve: its listeners, their accept goroutines
// and the context its handlers get.
type serveLoop struct {
	s          *Server
	listeners  []net.Listener
	accepted   chan acceptResult
	acceptDone chan struct{} // closed when every accept goroutine has returned
	closing    chan struct{} // closed when draining starts: no more back-off waits
	connCtx    context.Context
	draining   context.CancelFunc
}

func (s *Server) start(listeners []net.Listener) *serveLoop {
	l := &serveLoop{s: s, listeners: listeners, accepted: make(chan acceptResult),
		acceptDone: make(chan struct{}), closing: make(chan struct{})}
	l.connCtx, l.draining = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, ln := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.acceptLoop(ln)
		}()
	}
	go func() {
		wg.Wait()
		close(l.acceptDone)
	}()
	return l
}

func (l *serveLoop) dispatch(a acceptResult) {
	if a.Err != nil {
		l.s.Upgrader.log.Error("accept stopped", "listener", a.Listener.Addr().String(), "err", a.Err)
		return
	}
	go l.s.Handler(l.connCtx, a.Conn)
}

func (s *Server) drainTimeout() time.Duration {
	if s.DrainTimeout > 0 {
		return s.DrainTimeout
	}
	return DefaultDrainTimeout
}

// reload runs the Reload hook, asked for by why ("signal SIGHUP",
// "control request"), logs and returns its outcome.
func (s *Server) reload(why string) error {
	log := s.Upgrader.log.With("by", why)
	if s.Reload == nil {
		log.Info("reload signal: no reload hook, ignored")
		return errNoReloadHook
	}
	err := s.Reload()
	s.Upgrader.emit(event.Event{Kind: event.Reloaded, Err: err})
	if err != nil {
		log.Error("reload failed", "err", err)
		return fmt.Errorf("tcpgrace: reload: %w", err)
	}
	log.Info("reloaded")
	return nil
}

// drain accepts what waits in the kernel's accept queues (acceptQueued),
// stops accepting, tells handlers, serves every connection the accept
// goroutines already took (it is out of the kernel's queue: no other
// generation can have it), then shuts the Upgrader down within
// DrainTimeout.
func (l *serveLoop) drain(cause error, stopped bool) error {
	l.acceptQueued()
	close(l.closing)
	l.draining()
	for _, ln := range l.listeners {
		ln.Close() // nil or ErrClosed: after an upgrade they are closed already
	}
	for done := false; !done; {
		select {
		case a := <-l.accepted:
			l.dispatch(a)
		case <-l.acceptDone:
			done = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.s.drainTimeout())
	defer cancel()
	go l.s.signalsWhileDraining(ctx, cancel, stopped)
	err := l.s.Upgrader.Shutdown(ctx) // its "drained" line reports the outcome
	return errjoin.Join(cause, err)
}

// signalsWhileDraining answers signals until the drain ends: an upgrade
// signal is refused (this generation is shutting down, ErrClosed); a stop
// signal after the one that started the drain ends it at once (open
// connections are closed); a first stop signal to a generation that drains
// after an upgrade only counts as that first one; a reload signal is
// ignored.
func (s *Server) signalsWhileDraining(ctx context.Context, hurry context.CancelFunc, stopped bool) {
	log := s.Upgrader.log
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-s.Signals:
			switch {
			case s.kind(sig) == upgradeSignal:
				s.Upgrader.refuse("signal "+signalName(sig), fmt.Errorf("%w: this generation drains; upgrade the serving one", ErrClosed))
			case s.kind(sig) == stopSignal && !stopped:
				log.Info("stop signal: already draining; another one closes open connections", "signal", signalName(sig))
				stopped = true
			case s.kind(sig) == stopSignal:
				log.Warn("second stop signal: closing open connections now", "signal", signalName(sig))
				hurry()
				return
			default:
				log.Info("signal ignored while draining", "signal", signalName(sig))
			}
		}
	}
}

// acceptLoop feeds l.accepted until ln is closed.
func (l *serveLoop) acceptLoop(ln net.Listener) {
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	delay := minDelay
	for {
		c, err := ln.Accept()
		switch {
		case err == nil:
			delay = minDelay
			l.accepted <- acceptResult{Conn: c, Listener: ln}
		case errors.Is(err, net.ErrClosed):
			return
		case isTemporary(err):
			l.s.Upgrader.log.Warn("accept: backing off", "listener", ln.Addr().String(), "delay", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-l.closing:
			}
			delay = min(2*delay, maxDelay)
		default:
			l.accepted <- acceptResult{Listener: ln, Err: fmt.Errorf("tcpgrace: accept: %w", err)}
			return
		}
	}
}

// isTemporary reports accept errors worth waiting out: out of fds or
// memory, or a connection aborted before it was accepted.
func isTemporary(err error) bool {
	var ne net.Error
	return sockfd.TemporaryAccept(err) || errors.As(err, &ne) && ne.Timeout()
}

func or[T any](v, def []T) []T {
	if len(v) > 0 {
		return v
	}
	return def
}
