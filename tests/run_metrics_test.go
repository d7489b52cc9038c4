package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// `tcpgrace run -metrics ADDR` (issue #21): the supervisor's own metrics,
// scraped throughout its instances' upgrades, a crash and a failed
// upgrade.

// metricsAddrRe is the supervisor's line for its metrics socket.
var metricsAddrRe = regexp.MustCompile(`msg="metrics: answering" pid=\d+ addr=(\S+)`)

// runCounters are the counters a scrape must never see go down.
var runCounters = []string{"tcpgrace_run_restarts_total", "tcpgrace_run_crashes_total",
	`tcpgrace_upgrades_total{result="ok"}`, `tcpgrace_upgrades_total{result="failed"}`,
	"tcpgrace_upgrade_refusals_total", "tcpgrace_handoff_seconds_count"}

// TestRunMetrics: tcpgrace run -metrics answers every scrape (every
// 20 ms) with 200 and the text format while its instance is upgraded by
// tcpgrace upgrade and by SIGUSR1, SIGKILLed and restarted, and upgraded
// to a broken build, and while the supervisor upgrades itself in place
// (SIGUSR2), which passes the socket and the counters on; no counter
// ever goes down; at the end the counts, the serving generation, the
// instances, the hand-off histogram and the start time are right, and no
// instance holds the metrics socket.
func TestRunMetrics(t *testing.T) {
	dir := t.TempDir()
	tcp, ctl, app := freeAddr(t), filepath.Join(dir, "control.sock"), filepath.Join(dir, "app")
	events := filepath.Join(dir, "events.jsonl")
	deployAt(t, app, []byte(fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", lineserverBin)))
	begin := time.Now()
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl, "-metrics", "127.0.0.1:0",
		"-events", events, "-ready-timeout", "3s", "-stop-timeout", "3s"}, command: []string{app, "-tcp", tcp}})
	m := metricsAddrRe.FindStringSubmatch(s.logs.String())
	require.NotNil(t, m, "the supervisor logs its metrics address\nlogs:\n%s", s.logs)
	sc := startScraper(t, "http://"+m[1]+"/metrics")

	sc.waitScrapes(3)
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace upgrade: %s", r)
	s.upgrade() // SIGUSR1
	crashed, n := s.serving(), s.count(readyRe)
	require.NoError(t, syscall.Kill(crashed, syscall.SIGKILL))
	s.waitCount(readyRe, n+1) // restarted
	deployAt(t, app, []byte("#!/bin/sh\nexit 3\n"))
	r = runTcpgrace(t, "upgrade", "-control", ctl)
	require.Equal(t, 1, r.code, "an upgrade to a broken build fails: %s", r)
	checkNoMetricsSocket(t, m[1], s.serving())
	waitFor(t, "no instance left draining", func() bool {
		return sc.get()[`tcpgrace_run_instances{state="draining"}`] == 0
	})
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2), "the supervisor upgrades itself in place")
	s.waitLog(`msg="supervisor upgraded in place"`)
	s.waitCount(metricsAddrRe, 2)
	assert.Equal(t, m[1], metricsAddrRe.FindAllStringSubmatch(s.logs.String(), -1)[1][1],
		"the next image answers on the socket it was passed")
	sc.waitScrapes(sc.count() + 3)

	last := sc.get() // counted since the first start, the self-upgrade's exec included
	sc.stop()
	assert.Equal(t, map[string]float64{
		"tcpgrace_generation":                      4, // 1, upgraded to 2 and 3, restarted as 4; 5 failed
		`tcpgrace_run_instances{state="starting"}`: 0, `tcpgrace_run_instances{state="serving"}`: 1,
		`tcpgrace_run_instances{state="draining"}`: 0,
		"tcpgrace_run_restarts_total":              1, "tcpgrace_run_crashes_total": 1,
		`tcpgrace_upgrades_total{result="ok"}`: 2, `tcpgrace_upgrades_total{result="failed"}`: 1,
		"tcpgrace_upgrade_refusals_total": 0, "tcpgrace_handoff_seconds_count": 2,
		`tcpgrace_handoff_seconds_bucket{le="60"}`: 2,
	}, pick(last, "tcpgrace_generation", "tcpgrace_run_instances", "tcpgrace_run_restarts_total",
		"tcpgrace_run_crashes_total", "tcpgrace_upgrades_total", "tcpgrace_upgrade_refusals_total",
		"tcpgrace_handoff_seconds_count", `tcpgrace_handoff_seconds_bucket{le="60"}`))
	assert.Positive(t, last["tcpgrace_handoff_seconds_sum"])
	started := time.Unix(0, int64(last["tcpgrace_run_start_time_seconds"]*1e9))
	assert.WithinRange(t, started, begin.Add(-time.Second), time.Now(), "the start time is the supervisor's")
	sc.check()
	require.NoError(t, s.stop(), "the serving instance drains and the supervisor exits 0")
	checkRunEvents(t, events, s.pid, crashed)
}

// checkRunEvents checks the lines tcpgrace run -events wrote through
// TestRunMetrics's story, in order (other events may come between them):
// every line is the supervisor's, both of its images wrote, and the
// upgrades, the crash, the restart, the failed upgrade and the stop are
// there with their reasons.
func checkRunEvents(t *testing.T, path string, pid, crashed int) {
	t.Helper()
	type line struct {
		Kind     string `json:"kind"`
		PID      int    `json:"pid"`
		Instance int    `json:"instance"`
		Reason   string `json:"reason"`
		Err      string `json:"err"`
	}
	var lines []line
	for _, raw := range strings.Split(strings.TrimSpace(string(readFile(t, path))), "\n") {
		var l line
		require.NoError(t, json.Unmarshal([]byte(raw), &l), "an event line is JSON: %s", raw)
		assert.Equal(t, pid, l.PID, "every line is the supervisor's: %s", raw)
		lines = append(lines, l)
	}
	want := []struct {
		kind string
		ok   func(line) bool
	}{
		{"child started", nil},
		{"ready", nil},
		{"upgrade requested", func(l line) bool { return l.Reason == "control request" }},
		{"upgrade ended", func(l line) bool { return l.Err == "" }},
		{"upgrade requested", func(l line) bool { return l.Reason == "SIGUSR1" }},
		{"upgrade ended", func(l line) bool { return l.Err == "" }},
		{"crashed", func(l line) bool { return l.Instance == crashed }},
		{"restarting", nil},
		{"child ready", nil},
		{"upgrade requested", func(l line) bool { return l.Reason == "control request" }},
		{"upgrade ended", func(l line) bool { return strings.Contains(l.Err, "exit status 3") }},
		{"stopping", nil},
	}
	i := 0
	for _, l := range lines {
		if i < len(want) && l.Kind == want[i].kind && (want[i].ok == nil || want[i].ok(l)) {
			i++
		}
	}
	assert.Equal(t, len(want), i, "the events, in order; the first missing: %v\n%s", want[min(i, len(want)-1)].kind, readFile(t, path))
}

// TestRunMetricsBadAddr: a -metrics that is no HOST:PORT is a usage error
// (exit 2), one that cannot be bound makes run exit 1; both name the flag
// and the address, and no instance starts.
func TestRunMetricsBadAddr(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	tcp := freeAddr(t)
	for _, tc := range []struct {
		addr string
		code int
		want string
	}{
		{"127.0.0.1", 2, `tcpgrace run: -metrics "127.0.0.1": want HOST:PORT`},
		{"127.0.0.1:http", 2, `tcpgrace run: -metrics "127.0.0.1:http": port "http": want a number from 0 to 65535`},
		{busy.Addr().String(), 1, "tcpgrace run: -metrics " + busy.Addr().String() + ": listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{tcp, 1, "tcpgrace run: -metrics " + tcp + ": listen tcp " + tcp + ": bind: address already in use"}, // its -listen's
	} {
		r := runTcpgrace(t, "run", "-listen", "tcp://"+tcp, "-metrics", tc.addr, "--", lineserverBin, "-tcp", tcp)
		assert.Equal(t, tc.code, r.code, "-metrics %s: %s", tc.addr, r)
		assert.Contains(t, r.stderr, tc.want, "-metrics %s", tc.addr)
		assert.NotContains(t, r.stderr, "instance started", "-metrics %s", tc.addr)
	}
}

// scraper scrapes a metrics URL every 20 ms, at most 500 times, until
// stopped, and keeps what it saw.
type scraper struct {
	t    *testing.T
	url  string
	done chan struct{}
	quit chan struct{}

	mu       sync.Mutex
	scrapes  int
	failures []string           // scrapes that did not answer 200 with the text format
	lower    []string           // counters that went down
	last     map[string]float64 // the last scrape's samples
}

func startScraper(t *testing.T, url string) *scraper {
	sc := &scraper{t: t, url: url, done: make(chan struct{}), quit: make(chan struct{})}
	go sc.run()
	t.Cleanup(sc.stop)
	return sc
}

func (sc *scraper) run() {
	defer close(sc.done)
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 500; i++ {
		samples, err := scrapeOnce(client, sc.url)
		sc.mu.Lock()
		sc.scrapes++
		if err != nil {
			sc.failures = append(sc.failures, err.Error())
		} else {
			for _, c := range runCounters {
				if samples[c] < sc.last[c] {
					sc.lower = append(sc.lower, fmt.Sprintf("%s: %v after %v", c, samples[c], sc.last[c]))
				}
			}
			sc.last = samples
		}
		sc.mu.Unlock()
		select {
		case <-sc.quit:
			return
		case <-tick.C:
		}
	}
}

// scrapeOnce gets url and parses the text format; it returns every
// sample by name{labels}.
func scrapeOnce(client *http.Client, url string) (map[string]float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		return nil, fmt.Errorf("%s, Content-Type %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape: %w\n%s", err, body)
	}
	return flatten(families), nil
}

// flatten names each sample name{label="value",...}, labels in their
// order; a histogram's become _bucket{le=...}, _sum and _count.
func flatten(families map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				h := m.Histogram
				out[name+"_count"], out[name+"_sum"] = float64(h.GetSampleCount()), h.GetSampleSum()
				for _, b := range h.Bucket {
					out[fmt.Sprintf(`%s_bucket{le="%s"}`, name, strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))] =
						float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// pick is the samples whose names start with one of prefixes.
func pick(samples map[string]float64, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range samples {
		for _, p := range prefixes {
			if k == p || strings.HasPrefix(k, p+"{") {
				out[k] = v
			}
		}
	}
	return out
}

// waitScrapes waits until n scrapes were made.
func (sc *scraper) waitScrapes(n int) {
	sc.t.Helper()
	waitFor(sc.t, fmt.Sprintf("%d scrapes", n), func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.scrapes >= n
	})
}

// count is the number of scrapes made so far.
func (sc *scraper) count() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.scrapes
}

// get scrapes once more, now, and returns the samples.
func (sc *scraper) get() map[string]float64 {
	sc.t.Helper()
	samples, err := scrapeOnce(http.DefaultClient, sc.url)
	require.NoError(sc.t, err)
	return samples
}

// stop ends the scraping and waits for it.
func (sc *scraper) stop() {
	select {
	case <-sc.quit:
	default:
		close(sc.quit)
	}
	<-sc.done
}

// check checks that every scrape answered and no counter went down,
// and that the histogram has the library's buckets.
func (sc *scraper) check() {
	sc.t.Helper()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	assert.Empty(sc.t, sc.failures, "every scrape of %d answered 200 with the text format", sc.scrapes)
	assert.Empty(sc.t, sc.lower, "no counter went down in %d scrapes", sc.scrapes)
	assert.Greater(sc.t, sc.scrapes, 5, "scraped throughout")
	sc.t.Logf("%d scrapes", sc.scrapes)
	for _, b := range tcpgrace.HandoffBuckets {
		le := fmt.Sprintf(`tcpgrace_handoff_seconds_bucket{le="%s"}`, strconv.FormatFloat(b, 'g', -1, 64))
		assert.Contains(sc.t, sc.last, le, "the library's bucket %v", b)
	}
}

// checkNoMetricsSocket checks that process pid (an instance) holds no fd
// of the metrics socket listening at addr.
func checkNoMetricsSocket(t *testing.T, addr string, pid int) {
	t.Helper()
	inode := listeningInode(t, addr)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	sockets := 0
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if strings.HasPrefix(link, "socket:") {
			sockets++
		}
		assert.NotEqual(t, "socket:["+inode+"]", link, "instance %d's fd %s is the metrics socket", pid, fd.Name())
	}
	assert.Positive(t, sockets, "instance %d holds its sockets (the check looked at the right process)", pid)
}

// listeningInode is the inode of the IPv4 TCP socket listening at addr,
// from /proc/net/tcp.
func listeningInode(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	ip4 := net.ParseIP(host).To4()
	require.NotNil(t, ip4, "an IPv4 address: %s", addr)
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip4[3], ip4[2], ip4[1], ip4[0], p)
	f, err := os.Open("/proc/net/tcp")
	require.NoError(t, err)
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if fs := strings.Fields(lines.Text()); len(fs) > 9 && fs[1] == local && fs[3] == "0A" {
			return fs[9]
		}
	}
	t.Fatalf("no socket listens at %s in /proc/net/tcp", addr)
	return ""
}
