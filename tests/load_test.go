package tests

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// requestBudget is the test suite's availability bar: a request (connect,
// send, reply) that takes longer than this counts as failed, as it would
// for a real client with a 1 s timeout. A normal hand-off takes about
// 13 ms here, so only an outage comes near it: this bounds an outage, it
// does not measure speed (that is bench/'s job).
const requestBudget = time.Second

// maxLoadTime bounds every load run, whatever the test does.
const maxLoadTime = 2 * time.Minute

// load is continuous concurrent client traffic. Every request must
// succeed within requestBudget; the load also records the longest gap
// between two completed requests, the longest any client waited for the
// service.
type load struct {
	ok, failed atomic.Int64
	stop       chan struct{}   // closed by stopLoad: no new requests
	ctx        context.Context // cancelled by halt: requests in flight are cut
	halt       context.CancelFunc
	wg         sync.WaitGroup
	cleanup    sync.Once

	mu      sync.Mutex
	errs    []string      // the first few failures, for the report
	start   time.Time     // when the load started
	last    time.Time     // when the last request succeeded
	maxGap  time.Duration // the longest time without a success, up to last
	stopped time.Time     // when stopLoad was called
}

// target is one address the load is spread over.
type target struct{ network, addr string }

// startLoad runs workers per target, each sending one unique line per new
// connection and reading it back, until stopLoad, maxRequests in all, or
// maxLoadTime.
func startLoad(targets []target, workers int, maxRequests int64) *load {
	return runLoad(len(targets)*workers, maxRequests, func(ctx context.Context, w, n int) error {
		tg := targets[w/workers]
		return echoCtx(ctx, tg.network, tg.addr, fmt.Sprintf("%s-%d-%d", tg.network, w, n))
	})
}

// startFuncLoad is startLoad for any request: workers goroutines call
// do(worker, n) until stopLoad, maxRequests in all, or maxLoadTime, and
// record its result; a call that takes longer than requestBudget fails.
func startFuncLoad(workers int, maxRequests int64, do func(worker, n int) error) *load {
	return runLoad(workers, maxRequests, func(_ context.Context, w, n int) error { return do(w, n) })
}

func runLoad(workers int, maxRequests int64, do func(ctx context.Context, worker, n int) error) *load {
	l := &load{stop: make(chan struct{}), start: time.Now()}
	l.last = l.start
	l.ctx, l.halt = context.WithCancel(context.Background())
	deadline := l.start.Add(maxLoadTime)
	var issued atomic.Int64
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if issued.Add(1) > maxRequests || time.Now().After(deadline) {
					return
				}
				begin := time.Now()
				err := do(l.ctx, w, n)
				if l.ctx.Err() != nil {
					return // halted: the test is over, and this request was cut
				}
				l.record(err, begin)
			}
		}()
	}
	return l
}

// record counts the outcome of a request that began at begin; one that
// took longer than requestBudget failed, whatever its result.
func (l *load) record(err error, begin time.Time) {
	now := time.Now()
	if took := now.Sub(begin); err == nil && took > requestBudget {
		err = fmt.Errorf("took %v, more than the %v budget", took.Round(time.Millisecond), requestBudget)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.ok.Add(1)
		l.maxGap = max(l.maxGap, now.Sub(l.last))
		l.last = now
		return
	}
	l.failed.Add(1)
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("at %v: %v", begin.Sub(l.start).Round(time.Millisecond), err))
	}
}

// report sums the load up, with the first failures if any. The time
// since the last success, until now or the stop, counts as a gap too.
func (l *load) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	end := l.stopped
	if end.IsZero() {
		end = time.Now()
	}
	gap := max(l.maxGap, end.Sub(l.last))
	r := fmt.Sprintf("%d ok, %d failed (budget %v per request), longest gap between completed requests %v",
		l.ok.Load(), l.failed.Load(), requestBudget, gap.Round(time.Millisecond))
	if len(l.errs) > 0 {
		r += "; first failures:\n" + strings.Join(l.errs, "\n")
	}
	return r
}

// waitRequests waits until at least n more requests have succeeded, so
// that every phase of a test really runs under load; it fails the test at
// the first failed request.
func (l *load) waitRequests(t *testing.T, n int64) {
	t.Helper()
	l.cleanup.Do(func() { t.Cleanup(l.halt) }) // a failed test leaves no load behind
	target := l.ok.Load() + n
	deadline := time.Now().Add(waitTimeout)
	for l.ok.Load() < target {
		if l.failed.Load() > 0 {
			l.halt()
			t.Fatalf("a request failed while waiting for %d more successful ones: %s", n, l.report())
		}
		if time.Now().After(deadline) {
			l.halt()
			t.Fatalf("timed out waiting for %d more successful requests: %s", n, l.report())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopLoad ends the load and fails the test on any failed request.
// Requests in flight finish (each within requestBudget): stopping fails
// none, and one that stalls at the very end still counts. The time from
// the last success to the stop counts as a gap too.
func (l *load) stopLoad(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	l.stopped = time.Now()
	l.mu.Unlock()
	close(l.stop)
	l.wg.Wait()
	l.halt()
	t.Logf("load: %s", l.report())
	if l.failed.Load() > 0 || l.ok.Load() == 0 {
		t.Fatalf("every request should succeed within %v: %s", requestBudget, l.report())
	}
}

// dial connects within requestBudget.
func dial(network, addr string) (net.Conn, error) {
	return net.DialTimeout(network, addr, requestBudget)
}
