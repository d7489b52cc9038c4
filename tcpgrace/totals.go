package tcpgrace

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// tally keeps the service's [Totals] in this generation and what the older
// generations still draining last reported.
type tally struct {
	mu    sync.Mutex
	t     Totals
	began time.Time           // when the upgrade that started this generation began; zero on a cold start
	olds  map[int]OlderStatus // by pid, as each last reported

	upgrade   time.Time     // when the running upgrade began
	readyTook time.Duration // how long its next generation took to say ready
	// carried is Refusals as the last upgrade handed them over, -1
	// before; late counts the refusals since that a report took along.
	carried, late int
	// pending is the hand-off that started this generation, counted once
	// its parent no longer watches it (see settle); owed says it is not
	// counted yet.
	pending time.Duration
	owed    bool
}

// count keeps the totals from this generation's events: its own start by
// an upgrade, and the upgrades it runs or refuses.
func (u *Upgrader) count(e event.Event) {
	t := u.totals
	switch e.Kind {
	case event.Ready:
		if !t.began.IsZero() && u.inh.HasParent() {
			t.mu.Lock()
			t.pending, t.owed = e.Time.Sub(t.began), true
			t.mu.Unlock()
			u.settle(false)
		}
	case event.UpgradeRefused:
		t.refused()
	case event.ChildReady:
		t.mu.Lock()
		t.readyTook = e.Took
		t.mu.Unlock()
	case event.UpgradeEnded:
		if e.Err != nil {
			t.failed()
			return
		}
		t.mu.Lock()
		took := t.readyTook
		t.mu.Unlock()
		t.handedOff(took)
	}
}

// settle counts the hand-off that started this generation once it
// stands, as the parent counts it: once the parent no longer watches this
// generation through its ready grace (or, with force, now). Until then a
// scrape of either generation shows the same number of upgrades.
func (u *Upgrader) settle(force bool) {
	t := u.totals
	t.mu.Lock()
	owed := t.owed
	t.mu.Unlock()
	if !owed {
		return
	}
	if _, watched := u.inh.Watched(); watched && !force {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.owed {
		t.owed = false
		t.handedOffLocked(t.pending)
	}
}

// totalsNow settles and returns the totals.
func (u *Upgrader) totalsNow() Totals {
	u.settle(false)
	return u.totals.get()
}

// begin notes when an upgrade began, and returns the time.
func (t *tally) begin() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.upgrade, t.readyTook = time.Now(), 0
	return t.upgrade
}

// sinceBegin is the time since the running upgrade began.
func (t *tally) sinceBegin() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Since(t.upgrade)
}

// newTally starts from the totals an upgrade handed over, or from zero at
// now on a cold start.
func newTally(in *wire.Tally, now time.Time) *tally {
	t := &tally{olds: map[int]OlderStatus{}, carried: -1}
	t.t.FirstStart = now
	t.t.Handoffs.Counts = make([]uint64, len(HandoffBuckets)+1)
	if in == nil {
		return t
	}
	t.t.FirstStart = time.Unix(0, in.FirstStart)
	t.t.Upgrades, t.t.UpgradesFailed, t.t.Refusals = int(in.Upgrades), int(in.Failed), int(in.Refused)
	t.t.DrainsFinished, t.t.DrainsForceClosed = int(in.Finished), int(in.ForceClosed)
	t.t.Handoffs.Sum = time.Duration(in.HandoffNanos).Seconds()
	for i, n := range in.Handoffs {
		if i < len(t.t.Handoffs.Counts) {
			t.t.Handoffs.Counts[i] = n
			t.t.Handoffs.Count += n
		}
	}
	if in.Began != 0 {
		t.began = time.Unix(0, in.Began)
	}
	return t
}

// get returns a copy of the totals.
func (t *tally) get() Totals {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.t
	c.Handoffs.Counts = slices.Clone(t.t.Handoffs.Counts)
	return c
}

// carry returns the totals to hand to the next generation, whose upgrade
// began at began.
func (t *tally) carry(began time.Time) *wire.Tally {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.carried, t.late = t.t.Refusals, 0
	return &wire.Tally{
		FirstStart: t.t.FirstStart.UnixNano(), Began: began.UnixNano(),
		Upgrades: uint64(t.t.Upgrades), Failed: uint64(t.t.UpgradesFailed), Refused: uint64(t.t.Refusals),
		Finished: uint64(t.t.DrainsFinished), ForceClosed: uint64(t.t.DrainsForceClosed),
		HandoffNanos: int64(t.t.Handoffs.Sum * float64(time.Second)), Handoffs: slices.Clone(t.t.Handoffs.Counts),
	}
}

// lateRefusals returns the upgrades refused since the totals were handed
// to the next generation that a report has not taken along yet: the
// upgrade ran while they came. The next report takes them.
func (t *tally) lateRefusals() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.carried < 0 {
		return 0
	}
	n := t.t.Refusals - t.carried - t.late
	t.late += n
	return n
}

// handedOff counts a successful hand-off that took took.
func (t *tally) handedOff(took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handedOffLocked(took)
}

func (t *tally) handedOffLocked(took time.Duration) {
	t.t.Upgrades++
	h := &t.t.Handoffs
	s := took.Seconds()
	h.Counts[sort.SearchFloat64s(HandoffBuckets, s)]++
	h.Count++
	h.Sum += s
}

// failed counts an upgrade that ended with this generation still serving.
func (t *tally) failed() { t.add(&t.t.UpgradesFailed, 1) }

// refused counts an upgrade request refused before anything started.
func (t *tally) refused() { t.add(&t.t.Refusals, 1) }

func (t *tally) add(n *int, d int) {
	t.mu.Lock()
	*n += d
	t.mu.Unlock()
}

// report takes what an older generation reported: its open connections
// while it drains, or, final, how its drain ended.
func (t *tally) report(r report) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.t.Refusals += r.Refused
	if !r.Final {
		t.olds[r.PID] = OlderStatus{PID: r.PID, Generation: r.Generation, Connections: r.Connections}
		return
	}
	delete(t.olds, r.PID)
	t.t.DrainsFinished += r.Finished
	t.t.DrainsForceClosed += r.ForceClosed
}

// older lists the older generations that reported and are still alive,
// oldest first.
func (t *tally) older() []OlderStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []OlderStatus{}
	for pid, o := range t.olds {
		if !proc.Alive(pid) {
			delete(t.olds, pid)
			continue
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b OlderStatus) int { return a.Generation - b.Generation })
	return out
}
