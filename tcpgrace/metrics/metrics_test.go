package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// upgrader is this test process's one Upgrader (New may be called once
// per process), a cold start: generation 1. TestMain registers ln on it,
// asks it once to upgrade before Ready (a refusal: ErrNotReady), then
// calls Ready.
var (
	upgrader *tcpgrace.Upgrader
	ln       net.Listener
	started  time.Time
)

func TestMain(m *testing.M) {
	if err := setUp(); err != nil {
		fmt.Fprintln(os.Stderr, "metrics tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	upgrader.Close()
	os.Exit(code)
}

func setUp() error {
	started = time.Now()
	u, err := tcpgrace.New(tcpgrace.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	upgrader = u
	if ln, err = u.Listen("test", "tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	if err := u.Upgrade(context.Background()); !errors.Is(err, tcpgrace.ErrNotReady) {
		return fmt.Errorf("an upgrade before Ready: want ErrNotReady, got %v", err)
	}
	return u.Ready()
}

// contractNames are the metric families the collector exports, with
// their types: the names are a contract with dashboards and alerts.
var contractNames = map[string]dto.MetricType{
	"tcpgrace_generation":               dto.MetricType_GAUGE,
	"tcpgrace_upgrades_total":           dto.MetricType_COUNTER,
	"tcpgrace_upgrade_refusals_total":   dto.MetricType_COUNTER,
	"tcpgrace_handoff_seconds":          dto.MetricType_HISTOGRAM,
	"tcpgrace_connections_active":       dto.MetricType_GAUGE,
	"tcpgrace_draining_generations":     dto.MetricType_GAUGE,
	"tcpgrace_drain_connections":        dto.MetricType_GAUGE,
	"tcpgrace_drain_finished_total":     dto.MetricType_COUNTER,
	"tcpgrace_drain_force_closed_total": dto.MetricType_COUNTER,
	"tcpgrace_first_start_time_seconds": dto.MetricType_GAUGE,
}

// gather collects c through a registry of its own, by family name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err, "gathering")
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value is the value of the one gauge or counter of family name (with the
// label result=label if label is not empty).
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name, label string) float64 {
	t.Helper()
	mf := mfs[name]
	require.NotNil(t, mf, "no family %s", name)
	for _, m := range mf.GetMetric() {
		if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
			continue
		}
		if mf.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	require.Failf(t, "no such metric", "%s{result=%q}", name, label)
	return 0
}

// TestCollectorColdStart: a real Upgrader on a cold start exports every
// metric of the contract with its type, generation 1, both results of
// tcpgrace_upgrades_total at 0, the one refusal TestMain caused, an empty
// hand-off histogram in the buckets of tcpgrace.HandoffBuckets, and the
// first start's time.
func TestCollectorColdStart(t *testing.T) {
	mfs := gather(t, NewCollector(upgrader))
	got := map[string]dto.MetricType{}
	for name, mf := range mfs {
		got[name] = mf.GetType()
		assert.NotEmpty(t, mf.GetHelp(), "%s has a help text", name)
	}
	assert.Equal(t, contractNames, got, "the metric families and their types")

	assert.Equal(t, 1.0, value(t, mfs, "tcpgrace_generation", ""))
	assert.Equal(t, 0.0, value(t, mfs, "tcpgrace_upgrades_total", "ok"))
	assert.Equal(t, 0.0, value(t, mfs, "tcpgrace_upgrades_total", "failed"))
	assert.Len(t, mfs["tcpgrace_upgrades_total"].GetMetric(), 2, "result=ok and result=failed, nothing else")
	assert.Equal(t, 1.0, value(t, mfs, "tcpgrace_upgrade_refusals_total", ""), "the upgrade TestMain asked before Ready was refused")
	assert.Equal(t, 0.0, value(t, mfs, "tcpgrace_draining_generations", ""))
	assert.Equal(t, 0.0, value(t, mfs, "tcpgrace_drain_connections", ""))
	assert.Equal(t, 0.0, value(t, mfs, "tcpgrace_drain_force_closed_total", ""))
	first := value(t, mfs, "tcpgrace_first_start_time_seconds", "")
	assert.InDelta(t, float64(started.UnixNano())/1e9, first, 5, "the first start is this process's start")

	h := mfs["tcpgrace_handoff_seconds"].GetMetric()[0].GetHistogram()
	assert.Zero(t, h.GetSampleCount())
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	assert.Equal(t, tcpgrace.HandoffBuckets, bounds, "the histogram's buckets are tcpgrace.HandoffBuckets")
}

// TestCollectorConnections: tcpgrace_connections_active follows the
// connections accepted through a registered listener, read at each
// scrape.
func TestCollectorConnections(t *testing.T) {
	c := NewCollector(upgrader)
	active := func() float64 { return value(t, gather(t, c), "tcpgrace_connections_active", "") }
	require.Equal(t, 0.0, active())
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	assert.Equal(t, 1.0, active(), "one connection accepted and open")
	require.NoError(t, server.Close())
	assert.Equal(t, 0.0, active(), "closed: no longer counted")
}

// TestFromStatus: every field of a status lands in its metric; the
// hand-off histogram's buckets are cumulative (an observation past the
// last bound counts only in +Inf), and older generations that have not
// said how many connections they hold count as draining, but not in
// tcpgrace_drain_connections.
func TestFromStatus(t *testing.T) {
	counts := make([]uint64, len(tcpgrace.HandoffBuckets)+1)
	counts[0], counts[4], counts[len(counts)-1] = 1, 2, 1 // 5 ms, 100 ms, past 60 s
	st := tcpgrace.Status{
		Generation: 7, Connections: 12,
		Older: []tcpgrace.OlderStatus{{PID: 10, Generation: 5, Connections: 2}, {PID: 11, Generation: 6, Connections: -1},
			{PID: 12, Generation: 6, Connections: 5}},
		Totals: tcpgrace.Totals{
			FirstStart: time.Unix(1_700_000_000, 500_000_000), Upgrades: 6, UpgradesFailed: 2, Refusals: 3,
			Handoffs:       tcpgrace.Histogram{Counts: counts, Count: 4, Sum: 75.25},
			DrainsFinished: 40, DrainsForceClosed: 4,
		},
	}
	require.NoError(t, testutil.CollectAndCompare(statusCollector(st), strings.NewReader(wantFromStatus)))
}

// wantFromStatus is what TestFromStatus's status exports.
const wantFromStatus = `
# HELP tcpgrace_generation This generation's number: 1 on a cold start, one more at each upgrade.
# TYPE tcpgrace_generation gauge
tcpgrace_generation 7
# HELP tcpgrace_upgrades_total Upgrades since the first start: result=ok when the next generation became ready and took over, result=failed when this one kept serving.
# TYPE tcpgrace_upgrades_total counter
tcpgrace_upgrades_total{result="failed"} 2
tcpgrace_upgrades_total{result="ok"} 6
# HELP tcpgrace_upgrade_refusals_total Upgrade requests refused before anything started (one already in progress, not ready yet, too many generations alive), since the first start.
# TYPE tcpgrace_upgrade_refusals_total counter
tcpgrace_upgrade_refusals_total 3
# HELP tcpgrace_handoff_seconds Duration of each successful hand-off, from the upgrade request until the next generation was ready, since the first start.
# TYPE tcpgrace_handoff_seconds histogram
tcpgrace_handoff_seconds_bucket{le="0.005"} 1
tcpgrace_handoff_seconds_bucket{le="0.01"} 1
tcpgrace_handoff_seconds_bucket{le="0.025"} 1
tcpgrace_handoff_seconds_bucket{le="0.05"} 1
tcpgrace_handoff_seconds_bucket{le="0.1"} 3
tcpgrace_handoff_seconds_bucket{le="0.25"} 3
tcpgrace_handoff_seconds_bucket{le="0.5"} 3
tcpgrace_handoff_seconds_bucket{le="1"} 3
tcpgrace_handoff_seconds_bucket{le="2.5"} 3
tcpgrace_handoff_seconds_bucket{le="5"} 3
tcpgrace_handoff_seconds_bucket{le="10"} 3
tcpgrace_handoff_seconds_bucket{le="30"} 3
tcpgrace_handoff_seconds_bucket{le="60"} 3
tcpgrace_handoff_seconds_bucket{le="+Inf"} 4
tcpgrace_handoff_seconds_sum 75.25
tcpgrace_handoff_seconds_count 4
# HELP tcpgrace_connections_active Connections this generation accepted through its registered listeners that are still open.
# TYPE tcpgrace_connections_active gauge
tcpgrace_connections_active 12
# HELP tcpgrace_draining_generations Older generations still draining their connections.
# TYPE tcpgrace_draining_generations gauge
tcpgrace_draining_generations 3
# HELP tcpgrace_drain_connections Connections the older generations still draining held when they last reported.
# TYPE tcpgrace_drain_connections gauge
tcpgrace_drain_connections 7
# HELP tcpgrace_drain_finished_total Connections that closed by themselves while their generation drained, since the first start.
# TYPE tcpgrace_drain_finished_total counter
tcpgrace_drain_finished_total 40
# HELP tcpgrace_drain_force_closed_total Connections closed at a drain deadline while still open, since the first start.
# TYPE tcpgrace_drain_force_closed_total counter
tcpgrace_drain_force_closed_total 4
# HELP tcpgrace_first_start_time_seconds When the service's first generation started, in seconds since the Unix epoch.
# TYPE tcpgrace_first_start_time_seconds gauge
tcpgrace_first_start_time_seconds 1.7000000005e+09
`

// statusCollector collects a fixed status, as the collector does u's.
type statusCollector tcpgrace.Status

func (s statusCollector) Describe(ch chan<- *prometheus.Desc) { collector{}.Describe(ch) }

func (s statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range fromStatus(tcpgrace.Status(s)) {
		ch <- m
	}
}

// TestCollectorLint: client_golang's linter finds nothing to say about
// the names, units and help texts.
func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(upgrader))
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestHandler: the handler answers a scrape with 200 and the text format,
// which parses, holding the collector's families and no others.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(upgrader))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err, "parsing:\n%s", body)
	got := map[string]dto.MetricType{}
	for name, mf := range mfs {
		got[name] = mf.GetType()
	}
	assert.Equal(t, contractNames, got, "the families a scrape returns")
	assert.Contains(t, string(body), "\ntcpgrace_generation 1\n")
}

// TestCounterCollector: a counter added with AddCounter, before or after
// the collector is registered, is exported as tcpgrace_NAME with its help
// and the value read at each scrape; Handler serves it beside the
// contract's metrics.
func TestCounterCollector(t *testing.T) {
	c := NewCounterCollector(upgrader)
	var n atomic.Uint64
	n.Store(3)
	require.NoError(t, upgrader.AddCounter("test_packets_total", "Packets the test counted.", n.Load))
	mfs := gather(t, c)
	assert.Equal(t, 3.0, value(t, mfs, "tcpgrace_test_packets_total", ""))
	assert.Equal(t, "Packets the test counted.", mfs["tcpgrace_test_packets_total"].GetHelp())
	assert.Equal(t, dto.MetricType_COUNTER, mfs["tcpgrace_test_packets_total"].GetType())
	n.Add(4)
	assert.Equal(t, 7.0, value(t, gather(t, c), "tcpgrace_test_packets_total", ""), "read at each scrape")

	rec := httptest.NewRecorder()
	Handler(upgrader).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	assert.Contains(t, rec.Body.String(), "tcpgrace_test_packets_total 7")
	assert.Contains(t, rec.Body.String(), "tcpgrace_generation 1")
}
