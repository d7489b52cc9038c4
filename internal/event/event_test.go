package event

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamOrder: every subscriber gets every event, in emission order,
// in the order they subscribed, before Emit returns; events carry a time.
func TestStreamOrder(t *testing.T) {
	var s Stream
	var got []string
	for _, name := range []string{"sd", "control", "log"} {
		s.Subscribe(func(e Event) { got = append(got, name+":"+e.Kind.String()) })
	}
	s.Emit(Event{Kind: UpgradeStarted})
	s.Emit(Event{Kind: UpgradeEnded, Err: errors.New("x")})
	assert.Equal(t, []string{
		"sd:upgrade started", "control:upgrade started", "log:upgrade started",
		"sd:upgrade ended", "control:upgrade ended", "log:upgrade ended",
	}, got)
	var stamped Event
	s.Subscribe(func(e Event) { stamped = e })
	s.Emit(Event{Kind: Ready})
	assert.False(t, stamped.Time.IsZero(), "Emit stamps the time")
}

// TestStreamConcurrent: events emitted from several goroutines reach a
// subscriber one at a time (run with -race), none lost.
func TestStreamConcurrent(t *testing.T) {
	var s Stream
	n := 0
	s.Subscribe(func(Event) { n++ })
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				s.Emit(Event{Kind: Draining})
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 800, n, "every event delivered")
}

// TestKindString names every kind and only those.
func TestKindString(t *testing.T) {
	for k := Ready; k <= Restarting; k++ {
		assert.NotEqual(t, "unknown", k.String(), "kind %d has a name", k)
	}
	assert.Equal(t, "unknown", Kind(0).String())
	assert.Equal(t, "unknown", (Restarting + 1).String())
}
