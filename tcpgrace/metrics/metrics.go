// Package metrics exports a [tcpgrace.Upgrader]'s status as Prometheus
// metrics. It is a module of its own, so that the library keeps its two
// dependencies and only programs that import this package get
// client_golang.
//
// The collector reads [tcpgrace.Upgrader.Status] once per scrape: it
// starts no goroutine and adds nothing to the accept path. The counters
// count since the service's first generation started: each generation
// hands its totals to the next with the sockets, and a draining
// generation reports how its drain ended to the serving one, so a counter
// does not fall back to zero at an upgrade.
//
// Serve [Handler] on a listener registered with the Upgrader
// (u.Listen("metrics", "tcp", addr)): the metrics port is then handed
// over like the others and answers every scrape through upgrades. A
// scrape that reaches a generation while it hands over (on a connection
// it had already accepted) is answered by that generation, so
// tcpgrace_generation may show the older number once.
//
// The metric names are a contract:
//
//	tcpgrace_generation                   gauge      this generation's number, 1 on a cold start
//	tcpgrace_upgrades_total{result}       counter    upgrades that succeeded (result="ok") or failed (result="failed")
//	tcpgrace_upgrade_refusals_total       counter    upgrade requests refused before anything started
//	tcpgrace_handoff_seconds              histogram  from the upgrade request until the next generation was ready
//	tcpgrace_connections_active           gauge      this generation's open connections
//	tcpgrace_draining_generations         gauge      older generations still draining
//	tcpgrace_drain_connections            gauge      connections the older generations still hold
//	tcpgrace_drain_finished_total         counter    connections that closed by themselves during drains
//	tcpgrace_drain_force_closed_total     counter    connections cut at a drain deadline
//	tcpgrace_first_start_time_seconds     gauge      when the first generation started, Unix seconds
//
// Counters the program added with [tcpgrace.Upgrader.AddCounter] (such as
// tcpgrace/quic's) are exported by [NewCounterCollector] as tcpgrace_NAME;
// [Handler] serves both collectors.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The descriptions of every metric, named once.
var (
	generationDesc = prometheus.NewDesc("tcpgrace_generation",
		"This generation's number: 1 on a cold start, one more at each upgrade.", nil, nil)
	upgradesDesc = prometheus.NewDesc("tcpgrace_upgrades_total",
		"Upgrades since the first start: result=ok when the next generation became ready and took over, result=failed when this one kept serving.",
		[]string{"result"}, nil)
	refusalsDesc = prometheus.NewDesc("tcpgrace_upgrade_refusals_total",
		"Upgrade requests refused before anything started (one already in progress, not ready yet, too many generations alive), since the first start.", nil, nil)
	handoffDesc = prometheus.NewDesc("tcpgrace_handoff_seconds",
		"Duration of each successful hand-off, from the upgrade request until the next generation was ready, since the first start.", nil, nil)
	connectionsDesc = prometheus.NewDesc("tcpgrace_connections_active",
		"Connections this generation accepted through its registered listeners that are still open.", nil, nil)
	drainingDesc = prometheus.NewDesc("tcpgrace_draining_generations",
		"Older generations still draining their connections.", nil, nil)
	drainConnsDesc = prometheus.NewDesc("tcpgrace_drain_connections",
		"Connections the older generations still draining held when they last reported.", nil, nil)
	drainFinishedDesc = prometheus.NewDesc("tcpgrace_drain_finished_total",
		"Connections that closed by themselves while their generation drained, since the first start.", nil, nil)
	drainForceClosedDesc = prometheus.NewDesc("tcpgrace_drain_force_closed_total",
		"Connections closed at a drain deadline while still open, since the first start.", nil, nil)
	firstStartDesc = prometheus.NewDesc("tcpgrace_first_start_time_seconds",
		"When the service's first generation started, in seconds since the Unix epoch.", nil, nil)
)

// descs lists every description the collector describes, in the order
// it collects them.
var descs = []*prometheus.Desc{generationDesc, upgradesDesc, refusalsDesc, handoffDesc, connectionsDesc,
	drainingDesc, drainConnsDesc, drainFinishedDesc, drainForceClosedDesc, firstStartDesc}

// collector is the [prometheus.Collector] of one Upgrader.
type collector struct{ u *tcpgrace.Upgrader }

// NewCollector returns a [prometheus.Collector] of u's status: the
// metrics listed in the package documentation. Each Collect calls
// [tcpgrace.Upgrader.Status] once, which asks no other process and does
// not block beyond the Upgrader's own lock; the collector starts no
// goroutine and holds nothing between scrapes. Register it once per
// registry.
func NewCollector(u *tcpgrace.Upgrader) prometheus.Collector { return collector{u: u} }

// Describe sends the description of every metric Collect sends.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

// Collect reads the Upgrader's status once and sends every metric.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range fromStatus(c.u.Status()) {
		ch <- m
	}
}

// fromStatus turns one status into the metrics, in the order of descs.
func fromStatus(st tcpgrace.Status) []prometheus.Metric {
	t := st.Totals
	drainConns := 0
	for _, o := range st.Older {
		if o.Connections >= 0 { // negative: not known
			drainConns += o.Connections
		}
	}
	gauge := func(d *prometheus.Desc, v float64) prometheus.Metric {
		return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v int, labels ...string) prometheus.Metric {
		return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ms := []prometheus.Metric{
		gauge(generationDesc, float64(st.Generation)),
		counter(upgradesDesc, t.Upgrades, "ok"),
		counter(upgradesDesc, t.UpgradesFailed, "failed"),
		counter(refusalsDesc, t.Refusals),
		handoffs(t.Handoffs),
		gauge(connectionsDesc, float64(st.Connections)),
		gauge(drainingDesc, float64(len(st.Older))),
		gauge(drainConnsDesc, float64(drainConns)),
		counter(drainFinishedDesc, t.DrainsFinished),
		counter(drainForceClosedDesc, t.DrainsForceClosed),
	}
	if !t.FirstStart.IsZero() {
		ms = append(ms, gauge(firstStartDesc, float64(t.FirstStart.UnixNano())/1e9))
	}
	return ms
}

// handoffs is the hand-off histogram: h counts each observation in one
// bucket of [tcpgrace.HandoffBuckets] (the last count, past them, in
// none); Prometheus wants each bucket to count every observation up to
// its bound.
func handoffs(h tcpgrace.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(tcpgrace.HandoffBuckets))
	var cum uint64
	for i, bound := range tcpgrace.HandoffBuckets {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[bound] = cum
	}
	return prometheus.MustNewConstHistogram(handoffDesc, h.Count, h.Sum, buckets)
}

// Handler returns an http.Handler that answers a scrape with u's metrics
// (those of [NewCollector] and [NewCounterCollector], and no others) in any format Prometheus asks
// for. Mount it at /metrics on a listener registered with u, so that the
// port is handed over at each upgrade. It keeps no state between requests
// beyond its own registry.
func Handler(u *tcpgrace.Upgrader) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(u), NewCounterCollector(u))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// counterCollector is the [prometheus.Collector] of the counters added to
// one Upgrader's status.
type counterCollector struct{ u *tcpgrace.Upgrader }

// NewCounterCollector returns a [prometheus.Collector] of the counters
// added with [tcpgrace.Upgrader.AddCounter]: each as a counter named
// tcpgrace_NAME with its help text. The counters may be added at any
// time, before or after the collector is registered, so it describes none
// in advance (an unchecked collector: Prometheus checks their names at
// each scrape instead). Each Collect reads the Upgrader's status once.
func NewCounterCollector(u *tcpgrace.Upgrader) prometheus.Collector { return counterCollector{u: u} }

// Describe sends nothing: the counters are known only at Collect.
func (c counterCollector) Describe(chan<- *prometheus.Desc) {}

// Collect sends each added counter.
func (c counterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.u.Status().Counters {
		d := prometheus.NewDesc("tcpgrace_"+a.Name, a.Help, nil, nil)
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(a.Value))
	}
}
