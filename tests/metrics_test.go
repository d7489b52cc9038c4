package tests

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsThroughUpgrades: examples/http -metrics is scraped every
// 20 ms through three upgrades and a failed one (a broken binary at the
// server's path), one of the upgrades with a request in flight that the
// old generation's drain deadline cuts. Every scrape answers 200 and
// parses, the scrapes reach every generation, no counter ever goes down,
// a scrape during the cut drain sees the connection the old generation
// still holds, and at the end the serving generation says: generation 4,
// 3 upgrades ok and 1 failed, 3 hand-offs in the histogram, 1 connection
// force-closed. /metrics answers only on the metrics address, the demo
// endpoints only on the HTTP one.
func TestMetricsThroughUpgrades(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-metrics", "127.0.0.1:0",
		"-drain-timeout", "300ms", "-ready-timeout", "2s")
	base, mbase := "http://"+s.addr("http"), "http://"+s.addr("metrics")
	assert.Equal(t, http.StatusNotFound, statusOf(t, base+"/metrics"), "/metrics on the HTTP address")
	assert.Equal(t, http.StatusNotFound, statusOf(t, mbase+"/"), "the demo endpoint on the metrics address")
	sc := startLibScraper(mbase+"/metrics", 20*time.Millisecond)
	defer sc.stop()
	sc.waitScrapes(t, 2)

	s.upgrade()
	sc.waitScrapes(t, 2)           // answered by generation 2: the first has exited
	cutAtDrainDeadline(t, s, base) // the second upgrade: one connection force-closed
	sc.waitScrapes(t, 2)
	s.deployBytes([]byte("#!/bin/sh\necho 'config error: no such route' >&2\nexit 3\n"), 0o755)
	s.failUpgrade("exit status 3")
	s.deploy(exampleBin("http"))
	sc.waitScrapes(t, 2)
	s.upgrade()

	want := scrape{generation: 4, ok: 3, failed: 1, handoffs: 3, forceClosed: 1}
	last := sc.waitFor(t, 3*time.Second, func(m scrape) bool { return m.totals() == want.totals() })
	samples, errs := sc.stop()
	require.Empty(t, errs, "every scrape answers 200 and parses (%d scrapes)", len(samples))
	assert.Equal(t, want.totals(), last.totals(), "the serving generation's generation, upgrades ok/failed, hand-offs, force-closed")
	assert.Zero(t, last.refusals, "no upgrade was refused")
	assert.Equal(t, []float64{1, 2, 3, 4}, generationsSeen(samples), "the scrapes reached every generation")
	assert.True(t, slices.ContainsFunc(samples, func(m scrape) bool { return m.draining >= 1 && m.drainConns >= 1 }),
		"a scrape while the old generation held the slow request shows it draining with a connection")
	for _, bad := range countersDown(samples) {
		assert.Fail(t, "a counter went down", bad)
	}
	s.stop()
}

// cutAtDrainDeadline upgrades while a /slow request runs on the old
// generation, which cuts it at its drain deadline (-drain-timeout, far
// below the request's 5 s) and exits 0.
func cutAtDrainDeadline(t *testing.T, s *server, base string) {
	t.Helper()
	old := s.pid()
	slow := make(chan error, 1)
	go func() {
		_, err := getPID(newHTTPClient(1), base+"/slow?ms=5000")
		slow <- err
	}()
	waitLog(t, s, fmt.Sprintf(`msg="slow request" pid=%d `, old))
	s.upgrade() // waits for the old generation's exit, after its drain deadline
	select {
	case err := <-slow:
		require.Error(t, err, "the slow request is cut at the drain deadline")
	case <-time.After(waitTimeout):
		t.Fatal("the slow request was not cut at the drain deadline")
	}
}

// statusOf GETs url on a connection of its own and returns the status.
func statusOf(t *testing.T, url string) int {
	t.Helper()
	c := newHTTPClient(1)
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	require.NoError(t, err, "GET %s", url)
	resp.Body.Close()
	return resp.StatusCode
}

// scrape is what one scrape of /metrics said.
type scrape struct {
	generation, ok, failed, refusals, handoffs, forceClosed, draining, drainConns float64
}

// totals are the numbers the test checks at the end.
func (m scrape) totals() string {
	return fmt.Sprintf("generation=%v ok=%v failed=%v handoffs=%v force-closed=%v", m.generation, m.ok, m.failed, m.handoffs, m.forceClosed)
}

// counters are the counters of a scrape, by name.
func (m scrape) counters() map[string]float64 {
	return map[string]float64{
		`tcpgrace_upgrades_total{result="ok"}`: m.ok, `tcpgrace_upgrades_total{result="failed"}`: m.failed,
		"tcpgrace_upgrade_refusals_total": m.refusals, "tcpgrace_handoff_seconds_count": m.handoffs,
		"tcpgrace_drain_force_closed_total": m.forceClosed,
	}
}

// libScraper GETs a /metrics URL every interval over one kept-alive
// connection at a time, as Prometheus does, until stopped, for at most
// maxLibScrapes or maxLoadTime.
type libScraper struct {
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu      sync.Mutex
	samples []scrape
	errs    []string
}

// maxLibScrapes bounds a libScraper's scrapes.
const maxLibScrapes = 2000

func startLibScraper(url string, interval time.Duration) *libScraper {
	sc := &libScraper{done: make(chan struct{})}
	client := newHTTPClient(1)
	deadline := time.Now().Add(maxLoadTime)
	sc.wg.Go(func() {
		defer client.CloseIdleConnections()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 0; n < maxLibScrapes && time.Now().Before(deadline); n++ {
			m, err := scrapeLibrary(client, url)
			sc.mu.Lock()
			if err != nil {
				sc.errs = append(sc.errs, fmt.Sprintf("scrape %d at %s: %v", n, time.Now().Format("15:04:05.000"), err))
			} else {
				sc.samples = append(sc.samples, m)
			}
			sc.mu.Unlock()
			select {
			case <-sc.done:
				return
			case <-tick.C:
			}
		}
	})
	return sc
}

// stop ends the scrapes and returns every sample and every failure.
func (sc *libScraper) stop() ([]scrape, []string) {
	sc.once.Do(func() { close(sc.done) })
	sc.wg.Wait()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.Clone(sc.samples), slices.Clone(sc.errs)
}

// waitScrapes waits for n more successful scrapes; a failed scrape
// fails the test at once.
func (sc *libScraper) waitScrapes(t *testing.T, n int) {
	t.Helper()
	count := func() (int, []string) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return len(sc.samples), slices.Clone(sc.errs)
	}
	want, _ := count()
	want += n
	waitFor(t, fmt.Sprintf("%d more scrapes", n), func() bool {
		got, errs := count()
		require.Empty(t, errs, "every scrape answers 200 and parses")
		return got >= want
	})
}

// waitFor waits up to timeout for a scrape that satisfies ok and returns
// it, or, at the timeout, the last scrape.
func (sc *libScraper) waitFor(t *testing.T, timeout time.Duration, ok func(scrape) bool) scrape {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sc.mu.Lock()
		var last scrape
		if n := len(sc.samples); n > 0 {
			last = sc.samples[n-1]
		}
		sc.mu.Unlock()
		if ok(last) || time.Now().After(deadline) {
			return last
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// scrapeLibrary GETs url, which must answer 200 with the Prometheus text
// format holding every metric a scrape reads.
func scrapeLibrary(c *http.Client, url string) (scrape, error) {
	resp, err := c.Get(url)
	if err != nil {
		return scrape{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return scrape{}, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return scrape{}, fmt.Errorf("status %s: %q", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return scrape{}, fmt.Errorf("parsing %q: %w", body, err)
	}
	return readScrape(mfs)
}

// readScrape picks a scrape's numbers out of its metric families; a
// metric missing is an error.
func readScrape(mfs map[string]*dto.MetricFamily) (scrape, error) {
	var m scrape
	var missing []string
	get := func(name, result string) float64 {
		for _, x := range mfs[name].GetMetric() {
			if result != "" && (len(x.GetLabel()) != 1 || x.GetLabel()[0].GetValue() != result) {
				continue
			}
			switch {
			case x.Counter != nil:
				return x.GetCounter().GetValue()
			case x.Gauge != nil:
				return x.GetGauge().GetValue()
			case x.Histogram != nil:
				return float64(x.GetHistogram().GetSampleCount())
			}
		}
		if result != "" {
			name += fmt.Sprintf("{result=%q}", result)
		}
		missing = append(missing, name)
		return 0
	}
	m.generation = get("tcpgrace_generation", "")
	m.ok, m.failed = get("tcpgrace_upgrades_total", "ok"), get("tcpgrace_upgrades_total", "failed")
	m.refusals = get("tcpgrace_upgrade_refusals_total", "")
	m.handoffs = get("tcpgrace_handoff_seconds", "")
	m.forceClosed = get("tcpgrace_drain_force_closed_total", "")
	m.draining = get("tcpgrace_draining_generations", "")
	m.drainConns = get("tcpgrace_drain_connections", "")
	get("tcpgrace_connections_active", "")
	if len(missing) > 0 {
		return m, fmt.Errorf("missing from the scrape: %s", strings.Join(missing, ", "))
	}
	return m, nil
}

// generationsSeen lists the generations that answered scrapes, sorted.
func generationsSeen(samples []scrape) []float64 {
	var gens []float64
	for _, m := range samples {
		if !slices.Contains(gens, m.generation) {
			gens = append(gens, m.generation)
		}
	}
	slices.Sort(gens)
	return gens
}

// countersDown describes each time a counter was lower than in the
// scrape before.
func countersDown(samples []scrape) []string {
	var out []string
	for i := 1; i < len(samples); i++ {
		prev, cur := samples[i-1].counters(), samples[i].counters()
		for name, v := range cur {
			if v < prev[name] {
				out = append(out, fmt.Sprintf("%s went from %v to %v at scrape %d (generation %v to %v)",
					name, prev[name], v, i, samples[i-1].generation, samples[i].generation))
			}
		}
	}
	return out
}
