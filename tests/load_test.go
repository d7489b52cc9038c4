package tests

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// maxLoadTime bounds every load run, whatever the test does.
const maxLoadTime = 2 * time.Minute

// load is continuous concurrent client traffic: each request is a new
// connection that sends one unique line and reads it back.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string // the first few failures, for the report
	stop       chan struct{}
	wg         sync.WaitGroup
}

// target is one address the load is spread over.
type target struct{ network, addr string }

// startLoad runs workers per target until stopLoad, maxRequests in all, or
// maxLoadTime.
func startLoad(targets []target, workers int, maxRequests int64) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(maxLoadTime)
	var issued atomic.Int64
	for _, tg := range targets {
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
					l.record(echoOnce(tg.network, tg.addr, fmt.Sprintf("%s-%d-%d", tg.network, w, n)))
				}
			}()
		}
	}
	return l
}

func (l *load) record(err error) {
	if err == nil {
		l.ok.Add(1)
		return
	}
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

// waitRequests waits until at least n more requests have succeeded, so
// that every phase of a test really runs under load.
func (l *load) waitRequests(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	waitFor(t, fmt.Sprintf("%d more successful requests", n), func() bool {
		return l.ok.Load() >= target || l.failed.Load() > 0
	})
}

// stopLoad ends the load and fails the test on any failed request.
func (l *load) stopLoad(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("load: %d ok, %d failed", l.ok.Load(), l.failed.Load())
	if f := l.failed.Load(); f > 0 {
		t.Fatalf("%d requests failed, first ones:\n%s", f, strings.Join(l.errs, "\n"))
	}
}

func dial(network, addr string) (net.Conn, error) {
	return net.DialTimeout(network, addr, 5*time.Second)
}

// startFuncLoad is startLoad for any request: workers goroutines call
// do(worker, n) until stopLoad, maxRequests in all, or maxLoadTime, and
// record its result.
func startFuncLoad(workers int, maxRequests int64, do func(worker, n int) error) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(maxLoadTime)
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
				l.record(do(w, n))
			}
		}()
	}
	return l
}
