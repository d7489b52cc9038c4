package tcpgrace

import (
	"os"
)

// reloader runs Server.Reload for one loop, in a goroutine of its own so
// that the loop never waits for it, one run at a time: reload signals
// during a run coalesce into one more run. Only the loop's goroutine
// calls its methods.
type reloader struct {
	s       *Server
	ended   chan struct{} // a run ended; one slot, so a run never blocks on it
	running bool
	again   os.Signal // a reload signal arrived during the run
}

// signal acts on a reload signal: a run now, or one more after the
// running one.
func (r *reloader) signal(sig os.Signal) {
	switch {
	case r.s.Reload == nil:
		r.s.reload(sig) // logs that there is no hook
	case r.running:
		if r.again == nil {
			r.s.Upgrader.log.Info("reload signal: a reload runs, one more run follows it", "signal", sig.String())
		}
		r.again = sig
	default:
		r.start(sig)
	}
}

func (r *reloader) start(sig os.Signal) {
	r.running = true
	go func() {
		r.s.reload(sig)
		r.ended <- struct{}{}
	}()
}

// finished is called when the loop takes a run's end from ended: it
// starts the run still owed, if any.
func (r *reloader) finished() {
	r.running = false
	if sig := r.again; sig != nil {
		r.again = nil
		r.start(sig)
	}
}
