package tcpgrace

import (
	"os"
	"time"
)

// Status is what [Upgrader.Status] returns: the same facts the control
// socket's status answers (see cmd/tcpgrace), as values.
type Status struct {
	PID        int // this process
	Generation int // this generation's number, 1 on a cold start
	// State is starting, serving, upgrading (a next generation is
	// starting or watched through its ready grace), draining (the next
	// generation serves) or stopping.
	State       string
	Started     time.Time        // when New made this generation's Upgrader
	Listeners   []ListenerStatus // every socket registered and handed on, by name (not the control socket)
	Connections int              // this generation's open connections
	// Older lists the older generations still draining, with the
	// connections each had left when it last reported. A generation
	// reports when its drain begins and as its connections close.
	Older []OlderStatus
	// Totals are counted since the first generation started and travel
	// with every hand-off.
	Totals Totals
	// Counters are the counters added with [Upgrader.AddCounter], sorted
	// by name: this generation's own.
	Counters []CounterStatus
}

// ListenerStatus is one registered socket.
type ListenerStatus struct {
	Name    string // the name it is registered and handed on under
	Network string // tcp, tcp4, tcp6, unix, udp, udp4, udp6, unixgram
	Address string // the bound address: a port 0 resolved, a Unix path
}

// OlderStatus is an older generation that still drains, as it last
// reported.
type OlderStatus struct {
	PID         int
	Generation  int
	Connections int // connections it still had open
}

// Totals are the service's counts since its first generation started.
// Each generation hands them to the next with the sockets, so they
// outlive every process; a draining generation reports how its drain
// ended to the serving one, which adds it here.
type Totals struct {
	FirstStart time.Time // when the first generation's Upgrader was made
	// Upgrades is the number of hand-offs that succeeded: the next
	// generation said ready (and lived through the ready grace).
	Upgrades int
	// UpgradesFailed is the number of upgrades that started a next
	// generation, or tried to, and ended with this one still serving.
	UpgradesFailed int
	// Refusals is the number of upgrade requests refused before anything
	// started: one already in progress, not ready, too many generations.
	Refusals int
	// Handoffs holds the duration of every successful hand-off, from the
	// upgrade request until the next generation said ready, in seconds.
	Handoffs Histogram
	// DrainsFinished and DrainsForceClosed add up every finished drain
	// of the service's generations: the connections that closed by
	// themselves, and those cut at the drain deadline.
	DrainsFinished    int
	DrainsForceClosed int
}

// HandoffBuckets are the upper bounds, in seconds, of the buckets of
// [Totals].Handoffs. They are fixed so that every generation counts in
// the same buckets.
var HandoffBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Histogram counts observations in the buckets of [HandoffBuckets].
type Histogram struct {
	// Counts[i] is the number of observations in bucket i, at most
	// HandoffBuckets[i] and above the bucket before; the last element,
	// one past HandoffBuckets, counts the ones above every bound.
	Counts []uint64
	Count  uint64  // the number of observations
	Sum    float64 // their sum
}

// Status describes this generation, its listeners and connections, the
// older generations still draining and the service's totals. It is cheap:
// it asks no other process.
func (u *Upgrader) Status() Status {
	st := Status{PID: os.Getpid(), Generation: u.Generation(), Started: u.started, Listeners: []ListenerStatus{},
		Older: []OlderStatus{}}
	u.mu.Lock()
	st.State = u.state.statusName()
	for _, s := range u.liveSocketsLocked() {
		if !isControl(s.name) {
			st.Listeners = append(st.Listeners, ListenerStatus{Name: s.name, Network: s.network, Address: s.boundAddr()})
		}
	}
	st.Connections = u.conns.len()
	u.mu.Unlock()
	st.Totals = u.totalsNow()
	st.Older = u.totals.older()
	st.Counters = u.counters.read()
	return st
}
