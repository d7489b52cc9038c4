package tcpgrace

import (
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
)

// emit hands e to everything that hangs off this generation's lifecycle:
// the service manager (sdObserver), the control socket (controlServer.on)
// and the log (logEvent), in that order, before it returns.
func (u *Upgrader) emit(e event.Event) { u.events.Emit(e) }

// subscribe hangs the lifecycle's side effects off the event stream; New
// calls it once the service manager and the control socket are known.
func (u *Upgrader) subscribe() {
	u.events.Subscribe((&sdObserver{u: u}).on)
	if u.ctl != nil {
		u.events.Subscribe(u.ctl.on)
	}
	u.events.Subscribe(u.logEvent)
	u.events.Subscribe(u.count)
	if u.opts.OnEvent != nil {
		u.events.Subscribe(u.publish)
	}
}

// refuse says that an upgrade asked for by why was refused before
// Upgrade ran: one already runs, or this generation is still in its
// parent's ready grace.
func (u *Upgrader) refuse(why string, err error) {
	u.emit(event.Event{Kind: event.UpgradeRequested, Reason: why})
	u.emit(event.Event{Kind: event.UpgradeRefused, Err: err})
}

// logEvent writes the log line of each event that has one.
func (u *Upgrader) logEvent(e event.Event) {
	switch e.Kind {
	case event.Ready:
		u.log.Info("ready", "parent", e.HasParent)
	case event.UpgradeRefused:
		u.log.Warn("upgrade refused", "err", e.Err)
	case event.OlderDrained:
		u.log.Info("older generation drained", "older", e.Child, "older_generation", e.Generation,
			"finished", e.Finished, "force_closed", e.ForceClosed)
	case event.UpgradeEnded:
		if e.Err != nil {
			u.log.Error("upgrade failed", "err", e.Err)
			return
		}
		u.log.Info("upgrade done: next generation serves", "child", e.Child, "took", e.Took)
	case event.Stopping:
		u.log.Info("shutting down", "handed_off", !e.Serving)
	case event.Drained:
		u.logDrained(e)
	}
}

// logDrained writes the one line that ends a drain: a warning if
// connections were cut at the deadline or something failed to close.
func (u *Upgrader) logDrained(e event.Event) {
	args := []any{"took", e.Took.Round(time.Millisecond), "finished", e.Finished, "force_closed", e.ForceClosed}
	if e.Moved > 0 {
		args = append(args, "moved", e.Moved)
	}
	if e.Err != nil {
		u.log.Warn("drained", append(args, "err", e.Err)...)
		return
	}
	u.log.Info("drained", args...)
}
