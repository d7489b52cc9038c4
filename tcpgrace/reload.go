package tcpgrace

import (
	"errors"
	"fmt"
	"os"
)

// errNoReloadHook answers a reload request to a Server without a Reload
// hook.
var errNoReloadHook = errors.New("tcpgrace: reload: this server has no reload hook (Server.Reload); nothing reloaded")

// reloader runs Server.Reload for one loop, in a goroutine of its own so
// that the loop never waits for it, one run at a time: reload signals and
// requests during a run coalesce into one more run after it. A reload
// request on the control socket is answered with the outcome of the
// first run that starts after it. Only the loop's goroutine calls its
// methods.
type reloader struct {
	s       *Server
	ended   chan struct{} // a run ended; one slot, so a run never blocks on it
	running bool
	owed    bool           // a reload signal or request arrived during the run
	why     string         // what asked for the owed run, for its log line
	waiters []chan<- error // the requests the owed run answers
}

// signal acts on a reload signal: a run now, or one more after the
// running one.
func (r *reloader) signal(sig os.Signal) { r.ask("signal "+signalName(sig), nil) }

// request acts on a reload request from the control socket: reply gets
// the outcome of the run that carries it out, or errNoReloadHook.
func (r *reloader) request(reply chan<- error) {
	if r.s.Reload == nil {
		r.s.Upgrader.log.Info("reload requested on the control socket: no reload hook, refused")
		reply <- errNoReloadHook
		return
	}
	r.ask("control request", reply)
}

// ask starts a run, or owes one after the running one.
func (r *reloader) ask(why string, reply chan<- error) {
	var waiters []chan<- error
	if reply != nil {
		waiters = []chan<- error{reply}
	}
	switch {
	case r.s.Reload == nil:
		r.s.reload(why) // logs that there is no hook
	case r.running:
		if !r.owed {
			r.s.Upgrader.log.Info("reload asked while a reload runs: one more run follows it", "by", why)
		}
		r.owed, r.why = true, why
		r.waiters = append(r.waiters, waiters...)
	default:
		r.start(why, waiters)
	}
}

// start runs the hook in a goroutine, which answers waiters itself (the
// loop may have ended by then) and then tells the loop.
func (r *reloader) start(why string, waiters []chan<- error) {
	r.running = true
	go func() {
		err := r.s.reload(why)
		for _, w := range waiters {
			w <- err
		}
		r.ended <- struct{}{}
	}()
}

// finished is called when the loop takes a run's end from ended: it
// starts the run still owed, if any.
func (r *reloader) finished() {
	r.running = false
	if r.owed {
		why, waiters := r.why, r.waiters
		r.owed, r.why, r.waiters = false, "", nil
		r.start(why, waiters)
	}
}

// abandon answers the requests of a run still owed as the loop ends: it
// will not run.
func (r *reloader) abandon() {
	for _, w := range r.waiters {
		w <- fmt.Errorf("%w: this generation is leaving; no reload", ErrClosed)
	}
	r.waiters = nil
}
