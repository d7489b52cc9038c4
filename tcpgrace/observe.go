package tcpgrace

import (
	"context"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
)

// EventKind is what happened to a generation; see [Event].
type EventKind int

// The kinds of [Event], in the order a generation lives them. Fields an
// event's kind does not name are zero.
const (
	// EventReady: this generation serves; Ready has told its parent, if
	// any.
	EventReady EventKind = iota + 1
	// EventUpgradeRequested: an upgrade was asked for. Reason says by
	// what: "signal SIGUSR1" (the signal's name), "control request" or
	// "Upgrade call".
	EventUpgradeRequested
	// EventUpgradeRefused: the request was refused before anything
	// started; Err says why (ErrUpgradeInProgress, ErrNotReady,
	// ErrTooManyGenerations, ...).
	EventUpgradeRefused
	// EventUpgradeStarted: the next generation's process, PID, started.
	EventUpgradeStarted
	// EventNextReady: the next generation, PID, said ready, Took after the
	// request: the hand-off's duration. Within Options.ReadyGrace this
	// generation still watches it.
	EventNextReady
	// EventUpgraded: the hand-off stands; the next generation, PID,
	// serves. Took counts from the request, the ready grace included.
	EventUpgraded
	// EventUpgradeFailed: the upgrade ended with this generation still
	// serving; Err says why, PID is the next generation if it started.
	EventUpgradeFailed
	// EventReloaded: a Server's Reload hook ran; Err is its error.
	EventReloaded
	// EventStopping: this generation stops accepting. Reason is
	// "upgraded", "stop signal", "stop request", "context done" (of a
	// Server loop), or "Shutdown" or "Close" when called directly.
	EventStopping
	// EventDrainStarted: the drain of this generation's Connections began;
	// it ends by Deadline, if that is not zero.
	EventDrainStarted
	// EventDrainEnded: the drain is over after Took: Finished connections
	// closed by themselves, ForceClosed were cut at the deadline; Err is
	// what Shutdown returns.
	EventDrainEnded
	// EventOlderDrained: an older generation, PID of generation
	// Generation, reported the end of its drain (Finished, ForceClosed);
	// Totals count it.
	EventOlderDrained
)

var eventKindNames = [...]string{"", "ready", "upgrade requested", "upgrade refused", "upgrade started",
	"next ready", "upgraded", "upgrade failed", "reloaded", "stopping", "drain started", "drain ended",
	"older drained"}

// String names the kind, as the log does.
func (k EventKind) String() string {
	if k <= 0 || int(k) >= len(eventKindNames) {
		return "unknown"
	}
	return eventKindNames[k]
}

// Event is one thing that happened to this generation, as
// [Options.OnEvent] receives it.
type Event struct {
	Kind EventKind
	Time time.Time // when it happened
	// Generation is this generation's number; in EventOlderDrained, the
	// older generation's.
	Generation  int
	PID         int           // the other process: see each kind
	Reason      string        // EventUpgradeRequested, EventStopping
	Err         error         // EventUpgradeRefused, EventUpgradeFailed, EventReloaded, EventDrainEnded
	Took        time.Duration // EventNextReady, EventUpgraded, EventDrainEnded
	Connections int           // EventDrainStarted: open when it began
	Deadline    time.Time     // EventDrainStarted
	Finished    int           // EventDrainEnded, EventOlderDrained
	ForceClosed int           // EventDrainEnded, EventOlderDrained
	Moved       int           // EventDrainEnded: the connections handed to the next generation
}

// publish hands the application's hook, Options.OnEvent, the public form
// of e, if it has one.
func (u *Upgrader) publish(e event.Event) {
	p, ok := u.public(e)
	if ok {
		u.opts.OnEvent(p)
	}
}

// publicKinds maps the internal kinds that have a public form; an
// upgrade that ended without an error is EventUpgraded (see public).
var publicKinds = map[event.Kind]EventKind{
	event.Ready: EventReady, event.UpgradeRequested: EventUpgradeRequested,
	event.UpgradeRefused: EventUpgradeRefused, event.ChildStarted: EventUpgradeStarted,
	event.ChildReady: EventNextReady, event.UpgradeEnded: EventUpgradeFailed, event.Reloaded: EventReloaded,
	event.Stopping: EventStopping, event.Draining: EventDrainStarted, event.Drained: EventDrainEnded,
	event.OlderDrained: EventOlderDrained,
}

// public is the public form of e, if it has one.
func (u *Upgrader) public(e event.Event) (Event, bool) {
	k, ok := publicKinds[e.Kind]
	if !ok {
		return Event{}, false
	}
	p := Event{Kind: k, Time: e.Time, Generation: u.Generation(), PID: e.Child, Reason: e.Reason, Err: e.Err,
		Took: e.Took, Connections: e.Connections, Deadline: e.Deadline, Finished: e.Finished,
		ForceClosed: e.ForceClosed, Moved: e.Moved}
	switch {
	case e.Kind == event.UpgradeEnded && e.Err == nil:
		p.Kind = EventUpgraded
	case e.Kind == event.OlderDrained:
		p.Generation = e.Generation // the older generation's
	}
	return p, true
}

// overKey is the context key of the channel a Server loop's upgrade
// closes once its outcome is settled, just before Upgrade says it and
// returns (see loopUpgrade.settle).
type overKey struct{}

// upgradeOver closes the channel ctx carries under overKey, if any.
func upgradeOver(ctx context.Context) {
	if over, ok := ctx.Value(overKey{}).(chan struct{}); ok {
		close(over)
	}
}

// requestKey is the context key under which the Server loop and the
// control socket say who asked for an upgrade.
type requestKey struct{}

// requestedBy returns ctx for an upgrade asked for by why.
func requestedBy(ctx context.Context, why string) context.Context {
	return context.WithValue(ctx, requestKey{}, why)
}

// requester is who asked for the upgrade that runs under ctx: "Upgrade
// call" unless the Server loop or the control socket said.
func requester(ctx context.Context) string {
	if why, ok := ctx.Value(requestKey{}).(string); ok {
		return why
	}
	return "Upgrade call"
}
