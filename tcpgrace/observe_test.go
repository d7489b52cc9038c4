//go:build linux

package tcpgrace

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// eventLog collects what Options.OnEvent receives.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) on(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// wait waits until n events arrived.
func (l *eventLog) wait(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.events) >= n
	}, ioTimeout, 5*time.Millisecond, "%d events", n)
}

// take returns the events so far and forgets them.
func (l *eventLog) take() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

func kinds(events []Event) []EventKind {
	out := make([]EventKind, len(events))
	for i, e := range events {
		out[i] = e.Kind
	}
	return out
}

// TestEventsAndTotals: through a failed upgrade, a refused one and a
// successful one, then the drain, the application receives every event
// in order with the fields its kind names, the totals count each, and the
// next generation inherits them.
func TestEventsAndTotals(t *testing.T) {
	log := &eventLog{}
	h := newHarness(t, 10*time.Second, func(o *Options) { o.OnEvent = log.on })
	assert.Equal(t, []EventKind{EventReady}, kinds(log.take()), "Ready")

	h.useChild(childExit3)
	require.ErrorIs(t, h.u.Upgrade(context.Background()), ErrChildFailed)
	failedPID := h.startedChild()
	ev := log.take()
	require.Equal(t, []EventKind{EventUpgradeRequested, EventUpgradeStarted, EventUpgradeFailed}, kinds(ev), "a failed upgrade")
	assert.Equal(t, "Upgrade call", ev[0].Reason)
	assert.Equal(t, failedPID, ev[1].PID, "started names the child")
	assert.ErrorIs(t, ev[2].Err, ErrChildFailed, "failed says why")

	g := newGate(t, h)
	h.useChild(childGate)
	upgrade := h.upgradeAsync(context.Background())
	pid, conn := g.arrive(t)
	require.ErrorIs(t, h.u.Upgrade(context.Background()), ErrUpgradeInProgress)
	_, err := conn.Write([]byte{'R'})
	require.NoError(t, err)
	require.NoError(t, waitErr(t, upgrade, "the upgrade"))
	ev = log.take()
	require.Equal(t, []EventKind{EventUpgradeRequested, EventUpgradeStarted, EventUpgradeRequested, EventUpgradeRefused,
		EventNextReady, EventUpgraded}, kinds(ev), "a refusal during a successful upgrade")
	assert.Equal(t, pid, ev[1].PID)
	assert.ErrorIs(t, ev[3].Err, ErrUpgradeInProgress)
	assert.Equal(t, pid, ev[4].PID)
	assert.Positive(t, ev[4].Took, "next ready says how long the hand-off took")
	assert.Equal(t, pid, ev[5].PID)
	assert.GreaterOrEqual(t, ev[5].Took, ev[4].Took)
	for _, e := range ev {
		assert.Equal(t, 1, e.Generation, "%s: this generation's number", e.Kind)
		assert.False(t, e.Time.IsZero(), "%s: stamped", e.Kind)
	}

	tot := h.u.Status().Totals
	assert.Equal(t, 1, tot.Upgrades)
	assert.Equal(t, 1, tot.UpgradesFailed)
	assert.Equal(t, 1, tot.Refusals)
	assert.Equal(t, uint64(1), tot.Handoffs.Count)
	assert.InDelta(t, ev[4].Took.Seconds(), tot.Handoffs.Sum, 1e-9, "the hand-off counts until the child said ready")
	info := h.readChildInfo()
	assert.Equal(t, 0, info.Totals.Upgrades, "the child counts its own hand-off at its Ready, after it wrote its info")
	assert.Equal(t, 1, info.Totals.UpgradesFailed, "the failed upgrade travelled to the child")
	assert.Equal(t, 0, info.Totals.Refusals, "the refusal came after the fork: the drain's first report takes it along")
	assert.Equal(t, 1, h.u.totals.lateRefusals(), "the refusal is owed to the next generation")
	assert.Equal(t, 0, h.u.totals.lateRefusals(), "and owed once")
	assert.True(t, tot.FirstStart.Equal(info.Totals.FirstStart), "the first start travelled: %v, %v", tot.FirstStart, info.Totals.FirstStart)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.u.Shutdown(ctx))
	ev = log.take()
	require.Equal(t, []EventKind{EventStopping, EventDrainStarted, EventDrainEnded}, kinds(ev), "the drain")
	assert.Equal(t, "upgraded", ev[0].Reason)
	assert.Equal(t, 0, ev[1].Connections)
	h.stopChild(pid)
}

// TestMailboxReportsReachTheServingGeneration: a draining generation's
// reports, written to the service's mailbox, reach the generation that
// reads it: its connections while it drains, then how the drain ended,
// counted in the totals and announced as EventOlderDrained.
func TestMailboxReportsReachTheServingGeneration(t *testing.T) {
	log := &eventLog{}
	serving := newColdUpgrader(t, Options{OnEvent: log.on})
	require.NoError(t, serving.Ready())
	old := newColdUpgrader(t, Options{})
	in, out, err := serving.mail.dup()
	require.NoError(t, err)
	oldBox := &mailbox{in: in, out: out, log: old.log}
	defer oldBox.close()

	r := oldBox.report(old)
	require.Eventually(t, func() bool { return len(serving.Status().Older) == 1 }, 5*time.Second, 5*time.Millisecond,
		"the drain's first report should reach the serving generation")
	o := serving.Status().Older[0]
	assert.Equal(t, OlderStatus{PID: os.Getpid(), Generation: 1, Connections: 0}, o)

	r.final(7, 2)
	require.Eventually(t, func() bool { return serving.Status().Totals.DrainsForceClosed == 2 }, 5*time.Second,
		5*time.Millisecond, "the final report should be counted")
	st := serving.Status()
	assert.Equal(t, 7, st.Totals.DrainsFinished)
	assert.Empty(t, st.Older, "a generation that reported its end no longer drains")
	log.wait(t, 2) // the event follows the count: the reader counts, then announces
	ev := log.take()
	require.Len(t, ev, 2)
	assert.Equal(t, EventOlderDrained, ev[1].Kind)
	assert.Equal(t, os.Getpid(), ev[1].PID)
	assert.Equal(t, 7, ev[1].Finished)
	assert.Equal(t, 2, ev[1].ForceClosed)
}

// TestMailboxWaitsThroughAnUpgrade: reports sent while the serving
// generation has stopped reading (an upgrade hands the totals over) stay
// in the mailbox and are read when reading starts again.
func TestMailboxWaitsThroughAnUpgrade(t *testing.T) {
	serving := newColdUpgrader(t, Options{})
	require.NoError(t, serving.Ready())
	serving.mail.stopReading()
	require.NoError(t, serving.mail.send(report{Generation: 1, Final: true, ForceClosed: 3}, 0))
	time.Sleep(20 * time.Millisecond) // nothing reads: the report must wait, not be lost
	assert.Equal(t, 0, serving.Status().Totals.DrainsForceClosed, "nobody reads while an upgrade runs")
	serving.mail.read(serving)
	require.Eventually(t, func() bool { return serving.Status().Totals.DrainsForceClosed == 3 }, 5*time.Second,
		5*time.Millisecond, "the waiting report should be read once reading starts again")
}

// TestEventsOfAServerLoop: a Server loop's upgrade signal names the
// signal as the request's reason, a refusal says why, a reload reports
// its hook's error, and a stop signal is the stop's reason.
func TestEventsOfAServerLoop(t *testing.T) {
	log := &eventLog{}
	u := newColdUpgrader(t, Options{OnEvent: log.on})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	reloads := 0
	reload := func() error {
		if reloads++; reloads == 1 {
			return errors.New("config: line 3: no such directive")
		}
		return nil
	}
	sigs := make(chan os.Signal)
	done := serveInBackground(context.Background(), &Server{Upgrader: u, Handler: (&echoHandler{}).serve,
		Signals: sigs, Reload: reload}, ln)
	// Upgrades and reloads run in goroutines of their own: each step
	// waits for its events before the next.
	sendSignal(t, sigs, syscall.SIGUSR1) // before Ready: refused
	log.wait(t, 2)
	sendSignal(t, sigs, syscall.SIGHUP)
	log.wait(t, 3)
	sendSignal(t, sigs, syscall.SIGHUP)
	log.wait(t, 4)
	sendSignal(t, sigs, syscall.SIGTERM)
	require.NoError(t, waitErr(t, done, "Serve after SIGTERM"))

	ev := log.take()
	require.Equal(t, []EventKind{EventUpgradeRequested, EventUpgradeRefused, EventReloaded, EventReloaded,
		EventStopping, EventDrainStarted, EventDrainEnded}, kinds(ev))
	assert.Equal(t, "signal SIGUSR1", ev[0].Reason)
	assert.ErrorIs(t, ev[1].Err, ErrNotReady)
	assert.ErrorContains(t, ev[2].Err, "no such directive", "the first reload failed")
	assert.NoError(t, ev[3].Err, "the second reload worked")
	assert.Equal(t, "stop signal", ev[4].Reason)
	assert.Equal(t, 1, u.Status().Totals.Refusals)
}

// TestChildCountsItsHandOffOnceItStands: a next generation counts the
// upgrade that started it (with its duration since the upgrade began)
// only once its parent no longer watches it through its ready grace, as
// the parent counts it only then: a scrape of either shows the same
// number of upgrades.
func TestChildCountsItsHandOffOnceItStands(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	old, err := parent.Listen("old", "tcp", loopback)
	require.NoError(t, err)
	first := time.Now().Add(-time.Hour)
	env := &wire.Env{Source: wire.EnvFDs, Generation: 2, Tally: &wire.Tally{FirstStart: first.UnixNano(),
		Began: time.Now().Add(-time.Second).UnixNano(), Upgrades: 4, Handoffs: make([]uint64, len(HandoffBuckets)+1)}}
	child, r := inheritedChild(t, Options{}, env, "old", "tcp", old.Addr().String(), old.(syscall.Conn))
	_, err = child.Listen("old", "tcp", old.Addr().String())
	require.NoError(t, err)
	require.NoError(t, child.Ready())
	tot := child.Status().Totals
	assert.Equal(t, 4, tot.Upgrades, "its parent still holds the readiness pipe: the hand-off is not over")
	assert.True(t, first.Equal(tot.FirstStart), "the first start is the inherited one")

	require.NoError(t, r.Close()) // what the parent does when its grace ends
	tot = child.Status().Totals
	assert.Equal(t, 5, tot.Upgrades, "the hand-off stands: counted")
	assert.Equal(t, uint64(1), tot.Handoffs.Count)
	assert.InDelta(t, 1.0, tot.Handoffs.Sum, 0.5, "from the upgrade's start until this generation's Ready")
	assert.Equal(t, 5, child.Status().Totals.Upgrades, "and counted once")
}
