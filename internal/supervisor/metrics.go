//go:build linux

package supervisor

import (
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/promtext"
)

// handoffBuckets are the upper bounds, in seconds, of
// tcpgrace_handoff_seconds: the library's (tcpgrace.HandoffBuckets; a
// test checks that they agree), so that both histograms aggregate.
var handoffBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// runTotals are the supervisor's counters since its first image started:
// a self-upgrade hands them on (handOver.Totals).
type runTotals struct {
	Restarts       uint64 `json:"restarts"`        // Restarting events
	Crashes        uint64 `json:"crashes"`         // Crashed events: deaths of the serving instance
	UpgradesOK     uint64 `json:"upgrades_ok"`     // UpgradeEnded without an error
	UpgradesFailed uint64 `json:"upgrades_failed"` // UpgradeEnded with one
	Refusals       uint64 `json:"refusals"`        // UpgradeRefused events
	// Handoffs counts the successful upgrades by how long their instance
	// took to be ready: Handoffs[i] in bucket i of handoffBuckets, the
	// last element above every bound. HandoffSum is their sum, seconds.
	Handoffs   []uint64 `json:"handoffs"`
	HandoffSum float64  `json:"handoff_sum"`
}

// runMetrics are the supervisor's metrics: the totals, counted from its
// events, and the gauges, read from the loop's state at each event.
// Subscribers update them in the loop; the metrics server reads them from
// its own goroutines.
type runMetrics struct {
	mu         sync.Mutex
	t          runTotals
	generation int    // the serving instance's; 0 if none serves
	instances  [3]int // alive, by phase
	started    time.Time
}

// newRunMetrics starts from the totals a previous image handed on, if
// any; started is when the first image bound the sockets.
func newRunMetrics(started time.Time, carried *runTotals) *runMetrics {
	m := &runMetrics{started: started}
	if carried != nil {
		m.t = *carried
	}
	if len(m.t.Handoffs) != len(handoffBuckets)+1 { // none carried, or other bounds: start the histogram over
		m.t.Handoffs, m.t.HandoffSum = make([]uint64, len(handoffBuckets)+1), 0
	}
	return m
}

// watchEvents subscribes the metrics to the supervisor's events: each
// counts, and leaves the gauges as the loop's state now is.
func (s *Supervisor) watchEvents() {
	s.events.Subscribe(func(e event.Event) {
		s.metrics.count(e)
		s.updateGauges()
	})
}

// updateGauges sets the gauges from the loop's state.
func (s *Supervisor) updateGauges() {
	var byPhase [3]int
	for _, in := range s.instances {
		byPhase[in.phase]++
	}
	gen := 0
	if s.serving != nil {
		gen = s.serving.gen
	}
	s.metrics.mu.Lock()
	s.metrics.generation, s.metrics.instances = gen, byPhase
	s.metrics.mu.Unlock()
}

// count adds e to the totals.
func (m *runMetrics) count(e event.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.Kind {
	case event.Restarting:
		m.t.Restarts++
	case event.Crashed:
		m.t.Crashes++
	case event.UpgradeRefused:
		m.t.Refusals++
	case event.UpgradeEnded:
		if e.Err != nil {
			m.t.UpgradesFailed++
			return
		}
		m.t.UpgradesOK++
		s := e.Took.Seconds()
		m.t.Handoffs[sort.SearchFloat64s(handoffBuckets, s)]++
		m.t.HandoffSum += s
	}
}

// totals is a copy of the totals, for the hand-over.
func (m *runMetrics) totals() *runTotals {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.t
	t.Handoffs = slices.Clone(m.t.Handoffs)
	return &t
}

// write writes the metrics in Prometheus' text format.
func (m *runMetrics) write(w io.Writer) error {
	return promtext.Write(w, m.families())
}

// families are the metrics, as one consistent snapshot.
func (m *runMetrics) families() []promtext.Family {
	m.mu.Lock()
	defer m.mu.Unlock()
	one := func(v float64) []promtext.Sample { return []promtext.Sample{{Value: v}} }
	labelled := func(name string, values []string, counts []float64) []promtext.Sample {
		out := make([]promtext.Sample, len(values))
		for i, v := range values {
			out[i] = promtext.Sample{Labels: []promtext.Label{{Name: name, Value: v}}, Value: counts[i]}
		}
		return out
	}
	phases := []phase{phaseStarting, phaseServing, phaseDraining}
	states, alive := make([]string, len(phases)), make([]float64, len(phases))
	for i, p := range phases {
		states[i], alive[i] = p.String(), float64(m.instances[p])
	}
	return []promtext.Family{
		{Name: "tcpgrace_generation", Type: promtext.Gauge, Samples: one(float64(m.generation)),
			Help: "Generation of the instance that serves (1 for the first instance, one more for each next one); 0 while none serves."},
		{Name: "tcpgrace_run_instances", Type: promtext.Gauge, Samples: labelled("state", states, alive),
			Help: "Instances of the command alive, by state: starting (not ready yet), serving, draining (told to stop)."},
		{Name: "tcpgrace_run_restarts_total", Type: promtext.Counter, Samples: one(float64(m.t.Restarts)),
			Help: "Instances started because nothing served (the serving one died, or a start failed), since the supervisor started."},
		{Name: "tcpgrace_run_crashes_total", Type: promtext.Counter, Samples: one(float64(m.t.Crashes)),
			Help: "Deaths of the serving instance that nobody asked for, since the supervisor started."},
		{Name: "tcpgrace_upgrades_total", Type: promtext.Counter, Help: "Upgrades (SIGUSR1, tcpgrace upgrade) by result: ok (the new instance serves) or failed (it could not start, exited or was not ready in time), since the supervisor started.",
			Samples: labelled("result", []string{"ok", "failed"}, []float64{float64(m.t.UpgradesOK), float64(m.t.UpgradesFailed)})},
		{Name: "tcpgrace_upgrade_refusals_total", Type: promtext.Counter, Samples: one(float64(m.t.Refusals)),
			Help: "Upgrade requests refused before anything started (one in progress, too many instances, stopping), since the supervisor started."},
		{Name: "tcpgrace_handoff_seconds", Type: promtext.Histogram,
			Samples: promtext.HistogramSamples(handoffBuckets, m.t.Handoffs, m.t.HandoffSum),
			Help:    "Time from the start of an upgrade's instance until it was ready, for every successful upgrade."},
		{Name: "tcpgrace_run_start_time_seconds", Type: promtext.Gauge,
			Samples: one(float64(m.started.UnixNano()) / 1e9),
			Help:    "Start time of the supervisor (its first image, before any self-upgrade), in seconds since the Unix epoch."},
	}
}
