// Package event is the lifecycle event stream of one generation: the
// library's Upgrader emits what happens to it (ready, an upgrade started
// and ended, a stop, a drain), and what hangs off the lifecycle (the
// service manager's notifications, the control socket's view, the log)
// subscribes, instead of being called inline from the lifecycle code.
package event

import (
	"sync"
	"time"
)

// Kind is what happened.
type Kind int

// The kinds, in the order a generation lives them.
const (
	// Ready: this generation serves (Ready has told its parent, if any).
	// Event.HasParent says whether it was started by an upgrade.
	Ready Kind = iota + 1
	// UpgradeRefused: Upgrade refused to start; Event.Err says why.
	UpgradeRefused
	// UpgradeStarted: a next generation is being started.
	UpgradeStarted
	// ChildReady: the next generation said ready; the parent watches it
	// through its ready grace, if any.
	ChildReady
	// UpgradeEnded: the upgrade is over. Event.Err is nil when the next
	// generation (Event.Child) serves; otherwise this one still does.
	UpgradeEnded
	// Stopping: this generation stops (Shutdown or Close was called
	// first). Event.Serving says whether it was still the serving one,
	// rather than one that handed over.
	Stopping
	// Draining: Shutdown waits for open connections, until
	// Event.Deadline if it is not zero.
	Draining
	// Drained: Shutdown is over, after Event.Took: Event.Finished
	// connections closed by themselves, Event.ForceClosed were closed at
	// the deadline; Event.Err is what Shutdown returns.
	Drained
	// UpgradeRequested: an upgrade was asked for; Event.Reason says by
	// what (a signal's name, "control request", "Upgrade call").
	UpgradeRequested
	// ChildStarted: the next generation's process, Event.Child, started.
	ChildStarted
	// Reloaded: a reload ran in place; Event.Err is its error.
	Reloaded
	// OlderDrained: an older generation, Event.Child of generation
	// Event.Generation, reported the end of its drain (Event.Finished,
	// Event.ForceClosed).
	OlderDrained
	// Crashed: a supervised instance, Event.Child, died while it served;
	// Event.Err says how.
	Crashed
	// Restarting: a supervisor starts a new instance because the serving
	// one died.
	Restarting
)

var kindNames = [...]string{"", "ready", "upgrade refused", "upgrade started", "child ready", "upgrade ended",
	"stopping", "draining", "drained", "upgrade requested", "child started", "reloaded", "older drained",
	"crashed", "restarting"}

// String names the kind, as the log says it.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) || k == 0 {
		return "unknown"
	}
	return kindNames[k]
}

// Event is one thing that happened to a generation. Fields a kind does not
// mention are zero.
type Event struct {
	Kind      Kind
	Time      time.Time // when it was emitted
	HasParent bool      // Ready
	// Child is the next generation's pid (0 if it never started):
	// ChildStarted, ChildReady, UpgradeEnded; the older generation's in
	// OlderDrained; in a supervisor's events, the instance's (Crashed,
	// Draining, Drained, ...).
	Child int
	Err   error // UpgradeRefused, UpgradeEnded, Drained, Reloaded, Crashed
	// Took is, in ChildReady, the time since UpgradeStarted; in
	// UpgradeEnded the same, a ready grace included; in Drained, since
	// Draining.
	Took        time.Duration
	Serving     bool      // Stopping, Draining
	Reason      string    // UpgradeRequested: by what; Stopping: why
	Connections int       // Draining: open when the drain began
	Generation  int       // OlderDrained; in a supervisor's events, the instance's generation
	Deadline    time.Time // Draining
	Finished    int       // Drained, OlderDrained
	ForceClosed int       // Drained, OlderDrained
	Moved       int       // Drained: connections handed to the next generation
}

// Stream delivers each event to every subscriber, synchronously and in
// the order they subscribed, so that a subscriber sees events in the
// order they happened and has acted on one before Emit returns (the
// service manager hears of a hand-off before this generation exits). A
// subscriber must not block for long and must not emit. The zero Stream
// has no subscribers; it is safe for concurrent use.
type Stream struct {
	mu   sync.Mutex // held across delivery: one event at a time
	subs []func(Event)
}

// Subscribe adds f, which gets every event emitted from now on.
func (s *Stream) Subscribe(f func(Event)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, f)
}

// Emit stamps e with the time, if it has none, and hands it to every
// subscriber before it returns.
func (s *Stream) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.subs {
		f(e)
	}
}
