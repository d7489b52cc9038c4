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

// Workers is how many goroutines Do uses for n calls with at least
// minEach each: up to GOMAXPROCS, 1 below two goroutines' worth.
func Workers(n, minEach int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n/max(minEach, 1)))
}

// Do calls do(w, i) for every i below n, on Workers(n, minEach)
// goroutines; w is the worker's number, from 0, so that each may keep
// something of its own between calls. With one worker it calls them in
// order on the calling goroutine. It returns when every call has.
func Do(n, minEach int, do func(w, i int)) {
	workers := Workers(n, minEach)
	if workers == 1 {
		for i := range n {
			do(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				do(w, i)
			}
		})
	}
	wg.Wait()
}
