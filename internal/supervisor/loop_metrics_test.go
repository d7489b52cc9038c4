//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// recordEvents subscribes to s's events and returns what it has seen so
// far, each call.
func recordEvents(s *Supervisor) func() []event.Event {
	var seen []event.Event
	s.events.Subscribe(func(e event.Event) { seen = append(seen, e) })
	return func() []event.Event { return seen }
}

// brief is an event as the tests compare it: kind, pid, generation, and
// the reason or the error.
func brief(e event.Event) string {
	out := fmt.Sprintf("%s child=%d gen=%d", e.Kind, e.Child, e.Generation)
	if e.Reason != "" {
		out += " reason=" + e.Reason
	}
	if e.Err != nil {
		out += " err=" + e.Err.Error()
	}
	return out
}

func briefs(events []event.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = brief(e)
	}
	return out
}

// TestEventsUpgrade: an upgrade by SIGUSR1 emits, in order, the request,
// the start, the new instance's start and readiness, the upgrade's end,
// the old instance's drain and, once it has exited, its end; the metrics
// count one successful upgrade and its hand-off.
func TestEventsUpgrade(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	old := servingInstance(t, s, cmdSleep)
	seen := recordEvents(s)
	s.upgrade("SIGUSR1", nil)
	in := s.starting
	require.NotNil(t, in)
	s.ready(in, "test")
	reapInto(t, s, old) // sleep ends at the SIGTERM of its drain

	assert.Equal(t, []string{
		"upgrade requested child=0 gen=0 reason=SIGUSR1",
		"upgrade started child=0 gen=2 reason=SIGUSR1",
		fmt.Sprintf("child started child=%d gen=2 reason=upgrade", in.pid),
		fmt.Sprintf("child ready child=%d gen=2", in.pid),
		fmt.Sprintf("upgrade ended child=%d gen=2", in.pid),
		fmt.Sprintf("draining child=%d gen=1 reason=replaced by generation 2", old.pid),
		fmt.Sprintf("drained child=%d gen=1 err=killed by SIGTERM", old.pid),
	}, briefs(seen()))
	ended := seen()[4]
	assert.Positive(t, ended.Took, "the upgrade's end says how long the hand-off took")
	assert.WithinDuration(t, time.Now().Add(s.cfg.StopTimeout), seen()[5].Deadline, 5*time.Second, "the drain's deadline")

	m := scrape(t, s)
	assert.Contains(t, m, "tcpgrace_generation 2\n")
	assert.Contains(t, m, `tcpgrace_upgrades_total{result="ok"} 1`+"\n")
	assert.Contains(t, m, `tcpgrace_upgrades_total{result="failed"} 0`+"\n")
	assert.Contains(t, m, "tcpgrace_handoff_seconds_count 1\n")
	assert.Contains(t, m, `tcpgrace_handoff_seconds_bucket{le="+Inf"} 1`+"\n")
	assert.Contains(t, m, `tcpgrace_run_instances{state="serving"} 1`+"\n")
	assert.Contains(t, m, `tcpgrace_run_instances{state="draining"} 0`+"\n", "the old instance has gone")
}

// TestEventsUpgradeFails: a refused upgrade, and one whose instance exits
// before it is ready, are told apart; the metrics count one of each and
// the serving instance's generation stays.
func TestEventsUpgradeFails(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	servingInstance(t, s, cmdSleep)
	seen := recordEvents(s)
	s.cfg.Command = cmdExit3
	s.upgrade("control request", nil)
	in := s.starting
	require.NotNil(t, in)
	s.upgrade("SIGUSR1", nil) // refused: one starts
	reapInto(t, s, in)

	assert.Equal(t, []string{
		"upgrade requested child=0 gen=0 reason=control request",
		"upgrade started child=0 gen=2 reason=control request",
		fmt.Sprintf("child started child=%d gen=2 reason=upgrade", in.pid),
		"upgrade requested child=0 gen=0 reason=SIGUSR1",
		fmt.Sprintf("upgrade refused child=0 gen=0 err=%v: generation 2 (pid %d)", ErrUpgradeInProgress, in.pid),
		fmt.Sprintf("drained child=%d gen=2 err=exit status 3", in.pid),
		fmt.Sprintf("upgrade ended child=%d gen=2 err=%v: generation 2: exited (exit status 3) before it was ready",
			in.pid, ErrStartFailed),
	}, briefs(seen()))
	assert.ErrorIs(t, seen()[6].Err, ErrStartFailed)

	m := scrape(t, s)
	assert.Contains(t, m, "tcpgrace_generation 1\n")
	assert.Contains(t, m, `tcpgrace_upgrades_total{result="ok"} 0`+"\n")
	assert.Contains(t, m, `tcpgrace_upgrades_total{result="failed"} 1`+"\n")
	assert.Contains(t, m, "tcpgrace_upgrade_refusals_total 1\n")
	assert.Contains(t, m, "tcpgrace_handoff_seconds_count 0\n", "no hand-off")
}

// TestEventsCrash: the serving instance's death is a crash, then a
// restart starts the next instance; neither is an upgrade.
func TestEventsCrash(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	in := servingInstance(t, s, cmdSleep)
	seen := recordEvents(s)
	require.NoError(t, unix.Kill(in.pid, unix.SIGKILL))
	reapInto(t, s, in)
	next := s.starting
	require.NotNil(t, next, "a restart at once")
	s.ready(next, "test")

	assert.Equal(t, []string{
		fmt.Sprintf("crashed child=%d gen=1 err=killed by SIGKILL", in.pid),
		fmt.Sprintf("restarting child=0 gen=0 reason=generation 1 (pid %d) died while serving: killed by SIGKILL", in.pid),
		fmt.Sprintf("child started child=%d gen=2 reason=restart after a crash", next.pid),
		fmt.Sprintf("child ready child=%d gen=2", next.pid),
	}, briefs(seen()))

	m := scrape(t, s)
	assert.Contains(t, m, "tcpgrace_run_crashes_total 1\n")
	assert.Contains(t, m, "tcpgrace_run_restarts_total 1\n")
	assert.Contains(t, m, `tcpgrace_upgrades_total{result="ok"} 0`+"\n", "a restart is no upgrade")
	assert.Contains(t, m, "tcpgrace_generation 2\n")
}

// TestEventsStop: a stop says why and whether an instance served, then
// that every instance not yet draining drains; the first start says the
// supervisor is ready, once.
func TestEventsStop(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	seen := recordEvents(s)
	first := servingInstance(t, s, cmdSleep)
	second := servingInstance(t, s, cmdSleep)
	starting := startInstance(t, s, cmdSleep, nil)
	n := len(seen())
	s.stopBy(unix.SIGTERM, "control request")
	s.stop(unix.SIGINT) // a second stop emits nothing more

	got := briefs(seen())
	assert.Equal(t, 1, strings.Count(strings.Join(got, "\n"), "ready child=0"), "ready once: %v", got)
	assert.Equal(t, []string{
		"stopping child=0 gen=0 reason=control request",
		fmt.Sprintf("draining child=%d gen=2 reason=stop: control request", second.pid),
		fmt.Sprintf("draining child=%d gen=3 reason=stop: control request", starting.pid),
	}, got[n:], "the first instance drains already")
	assert.True(t, seen()[n].Serving, "an instance served when the stop began")
	assert.Equal(t, phaseDraining, first.phase)
	m := scrape(t, s)
	assert.Contains(t, m, `tcpgrace_run_instances{state="draining"} 3`+"\n")
	assert.Contains(t, m, "tcpgrace_generation 0\n", "nothing serves")
}

// scrape is the metrics as GET /metrics renders them; it checks that the
// buckets are the library's.
func scrape(t *testing.T, s *Supervisor) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, s.metrics.write(&b))
	require.Len(t, s.metrics.t.Handoffs, len(tcpgrace.HandoffBuckets)+1)
	return b.String()
}

// TestHandoffBuckets: the hand-off histogram has the library's buckets,
// so that both aggregate.
func TestHandoffBuckets(t *testing.T) {
	assert.Equal(t, tcpgrace.HandoffBuckets, handoffBuckets)
}

// TestMetricsText: every family has its HELP and TYPE, the gauges and
// counters of a fresh supervisor are zero, the start time is its own,
// and the histogram is cumulative.
func TestMetricsText(t *testing.T) {
	started := time.Unix(1700000000, 500000000)
	m := newRunMetrics(started, &runTotals{Restarts: 2, Crashes: 1, UpgradesOK: 3, UpgradesFailed: 1, Refusals: 4,
		Handoffs: []uint64{1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, HandoffSum: 0.05})
	var b strings.Builder
	require.NoError(t, m.write(&b))
	out := b.String()
	for _, name := range []string{"tcpgrace_generation", "tcpgrace_run_instances", "tcpgrace_run_restarts_total",
		"tcpgrace_run_crashes_total", "tcpgrace_upgrades_total", "tcpgrace_upgrade_refusals_total",
		"tcpgrace_handoff_seconds", "tcpgrace_run_start_time_seconds"} {
		assert.Contains(t, out, "# HELP "+name+" ")
		assert.Regexp(t, `# TYPE `+name+` (gauge|counter|histogram)\n`, out)
	}
	for _, line := range []string{"tcpgrace_generation 0", `tcpgrace_run_instances{state="starting"} 0`,
		"tcpgrace_run_restarts_total 2", "tcpgrace_run_crashes_total 1", `tcpgrace_upgrades_total{result="ok"} 3`,
		`tcpgrace_upgrades_total{result="failed"} 1`, "tcpgrace_upgrade_refusals_total 4",
		`tcpgrace_handoff_seconds_bucket{le="0.005"} 1`, `tcpgrace_handoff_seconds_bucket{le="0.025"} 3`,
		`tcpgrace_handoff_seconds_bucket{le="60"} 3`, `tcpgrace_handoff_seconds_bucket{le="+Inf"} 3`,
		"tcpgrace_handoff_seconds_sum 0.05", "tcpgrace_handoff_seconds_count 3",
		"tcpgrace_run_start_time_seconds 1.7000000005e+09"} {
		assert.Contains(t, out, line+"\n")
	}
}

// TestTotalsHandedOver: a self-upgrade's state carries the counters and
// the start time, and the next image's metrics go on from them; a state
// from an image that did not count them starts from its restarts.
func TestTotalsHandedOver(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	s.started = time.Now().Add(-time.Hour)
	notify, err := newNotifySocket(s.log) // handOver names it
	require.NoError(t, err)
	defer notify.close()
	s.notify = notify
	servingInstance(t, s, cmdSleep)
	s.upgrade("SIGUSR1", nil)
	s.ready(s.starting, "test")
	s.upgrade("SIGUSR1", nil)
	s.upgrade("SIGUSR1", nil) // refused: one starts
	s.emit(event.Event{Kind: event.Crashed})
	require.Equal(t, runTotals{UpgradesOK: 1, Refusals: 1, Crashes: 1}, withoutHistogram(*s.metrics.totals()))

	state, err := json.Marshal(s.handOver(nil))
	require.NoError(t, err)
	h, err := decodeHandOver(string(state))
	require.NoError(t, err)
	next := newRunMetrics(time.Unix(0, h.Started), h.Totals)
	assert.Equal(t, s.metrics.totals(), next.totals(), "the counters cross the exec")
	assert.Equal(t, s.started.UnixNano(), next.started.UnixNano(), "the first start's time too")

	old := newRunMetrics(time.Now(), &runTotals{Restarts: 5})
	assert.Equal(t, uint64(5), old.totals().Restarts)
	assert.Len(t, old.totals().Handoffs, len(handoffBuckets)+1, "an empty histogram")
}

func withoutHistogram(t runTotals) runTotals {
	t.Handoffs, t.HandoffSum = nil, 0
	return t
}

// TestMetricsServer: GET and HEAD /metrics answer 200 in the text format,
// another path 404, another method 405; a paused server leaves a scrape
// in the socket's queue, and answers it once started again.
func TestMetricsServer(t *testing.T) {
	ln, err := bindMetrics("127.0.0.1:0")
	require.NoError(t, err)
	m := newRunMetrics(time.Now(), nil)
	web := newMetricsServer(ln, m.write, newLoopSupervisor(t, Config{}).log)
	web.start()
	defer web.close()
	url := "http://" + web.addr()
	get := func(method, path string) (int, string, string) {
		req, err := http.NewRequest(method, url+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	code, ctype, body := get(http.MethodGet, "/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "text/plain; version=0.0.4; charset=utf-8", ctype)
	assert.Contains(t, body, "# TYPE tcpgrace_generation gauge\n")
	code, _, _ = get(http.MethodHead, "/metrics")
	assert.Equal(t, http.StatusOK, code)
	code, _, _ = get(http.MethodGet, "/")
	assert.Equal(t, http.StatusNotFound, code)
	code, _, _ = get(http.MethodPost, "/metrics")
	assert.Equal(t, http.StatusMethodNotAllowed, code)

	web.pause()
	conn, err := net.Dial("tcp", web.addr())
	require.NoError(t, err, "a paused server's socket still takes connections into its queue")
	defer conn.Close()
	_, err = conn.Write([]byte("GET /metrics HTTP/1.0\r\n\r\n"))
	require.NoError(t, err)
	web.start()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(conn)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(reply), "HTTP/1.0 200 OK"), "the queued scrape is answered: %q", reply)
	http.DefaultClient.CloseIdleConnections()
}

// TestCheckMetricsAddr: HOST:PORT with a numeric port; the error names
// the flag and the value.
func TestCheckMetricsAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:9100", ":9100", "[::1]:0", "localhost:65535"} {
		assert.NoError(t, CheckMetricsAddr(ok), ok)
	}
	for bad, want := range map[string]string{
		"127.0.0.1":       `-metrics "127.0.0.1": want HOST:PORT`,
		"":                `-metrics "": want HOST:PORT`,
		"host:http":       `-metrics "host:http": port "http": want a number from 0 to 65535`,
		"127.0.0.1:65536": `port "65536"`,
		"127.0.0.1:-1":    `port "-1"`,
	} {
		assert.ErrorContains(t, CheckMetricsAddr(bad), want, bad)
	}
}
