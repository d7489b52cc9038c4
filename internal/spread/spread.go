// Package spread runs a loop's iterations on the CPUs: for the
// per-socket system calls of a hand-off (the next generation making its
// inherited sockets listeners), which nothing else waits on but the
// hand-off itself.
package spread

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Do calls do(i) for every i below n, on up to GOMAXPROCS goroutines
// with at least minEach calls each; below two goroutines' worth it calls
// them in order on the calling goroutine. It returns when every call has.
func Do(n, minEach int, do func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/max(minEach, 1))
	if workers <= 1 {
		for i := range n {
			do(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				do(i)
			}
		})
	}
	wg.Wait()
}
