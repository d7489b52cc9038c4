package spread

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestDo: every index is done exactly once, on more than one goroutine
// when there are enough, on the caller's alone when there are few.
func TestDo(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs GOMAXPROCS of 2 or more to spread")
	}
	for _, n := range []int{0, 1, 15, 16, 31, 32, 1000} {
		counts := make([]atomic.Int32, n)
		var mu sync.Mutex
		gids := map[uint64]bool{}
		second := make(chan struct{}) // closed once a second goroutine calls
		workers := map[uint64]int{}   // goroutine -> its worker number
		Do(n, 16, func(w, i int) {
			counts[i].Add(1)
			mu.Lock()
			first, id := len(gids) == 0, goid()
			if prev, seen := workers[id]; seen && prev != w {
				t.Errorf("n=%d: a goroutine called as worker %d, then %d", n, prev, w)
			}
			workers[id] = w
			if !gids[id] {
				gids[id] = true
				if len(gids) == 2 {
					close(second)
				}
			}
			mu.Unlock()
			if first && n >= 32 {
				// The first call waits for another goroutine, so that one
				// worker cannot do it all before the next starts; done in
				// order, it gives up after a while and the count shows it.
				select {
				case <-second:
				case <-time.After(2 * time.Second):
				}
			}
		})
		for i := range counts {
			assert.EqualValues(t, 1, counts[i].Load(), "n=%d: index %d done once", n, i)
		}
		switch {
		case n < 32:
			assert.LessOrEqual(t, len(gids), 1, "n=%d: done on the caller's goroutine", n)
		default:
			assert.Greater(t, len(gids), 1, "n=%d: spread over goroutines", n)
		}
		numbers := map[int]bool{}
		for _, w := range workers {
			numbers[w] = true
			assert.Less(t, w, Workers(n, 16), "n=%d: worker numbers are below Workers", n)
		}
		assert.Len(t, numbers, len(workers), "n=%d: each goroutine has a worker number of its own", n)
	}
}

// goid is the calling goroutine's id, from its stack's header line.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	var id uint64
	for _, c := range b[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
