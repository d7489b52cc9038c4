//go:build linux

package tcpgrace

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedReload is a reload hook that reports each run on started and
// returns only when the test sends on release; it counts runs that
// overlap.
type gatedReload struct {
	started  chan int
	release  chan struct{}
	runs     atomic.Int32
	running  atomic.Int32
	overlaps atomic.Int32
}

func newGatedReload() *gatedReload {
	return &gatedReload{started: make(chan int, 10), release: make(chan struct{})}
}

func (g *gatedReload) reload() error {
	if g.running.Add(1) > 1 {
		g.overlaps.Add(1)
	}
	defer g.running.Add(-1)
	g.started <- int(g.runs.Add(1))
	<-g.release
	return errors.New("reload: nothing to reload in a test")
}

// waitRun waits for run n to start.
func (g *gatedReload) waitRun(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-g.started:
		require.Equal(t, n, got, "reload run %d should start", n)
	case <-time.After(ioTimeout):
		require.FailNow(t, "the reload hook did not run", "run %d", n)
	}
}

// sendSignal hands sig to a Server's loop on sigs, failing the test if
// the loop does not take it within ioTimeout.
func sendSignal(t *testing.T, sigs chan<- os.Signal, sig os.Signal) {
	t.Helper()
	select {
	case sigs <- sig:
	case <-time.After(ioTimeout):
		require.FailNow(t, "signal not taken", "the Server's loop did not take %v (busy running a reload?)", sig)
	}
}

// TestServeSlowReloadKeepsServing is the regression test for a reload
// hook run inside the signal loop: while it ran, no connection was
// handed to a handler and no signal was taken. While the hook runs, a
// new connection is served and a stop signal drains Serve at once.
func TestServeSlowReloadKeepsServing(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	g := newGatedReload()
	defer close(g.release) // the hook ends with the test, after Serve
	sigs := make(chan os.Signal)
	done := serveInBackground(context.Background(), &Server{Upgrader: u, Handler: (&echoHandler{}).serve,
		Signals: sigs, Reload: g.reload}, ln)
	sendSignal(t, sigs, syscall.SIGHUP)
	g.waitRun(t, 1)
	echo(t, ln.Addr().String(), "served while the reload hook runs")
	sendSignal(t, sigs, syscall.SIGTERM) // taken: the loop does not wait for the hook
	select {
	case err := <-done:
		assert.NoError(t, err, "a stop signal during a reload drains and returns nil")
	case <-time.After(ioTimeout):
		t.Fatal("Serve waited for the reload hook")
	}
	assert.EqualValues(t, 1, g.running.Load(), "the hook still ran when Serve returned")
}

// TestServeReloadsCoalesce: reload signals during a run make one more run
// after it, never a run beside it.
func TestServeReloadsCoalesce(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	g := newGatedReload()
	sigs := make(chan os.Signal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := (&Server{Upgrader: u, Signals: sigs, Reload: g.reload}).loop(ctx, nil, nil)
		done <- err
	}()
	sendSignal(t, sigs, syscall.SIGHUP)
	g.waitRun(t, 1)
	for range 3 {
		sendSignal(t, sigs, syscall.SIGHUP) // each taken by the loop while run 1 is held
	}
	g.release <- struct{}{}
	g.waitRun(t, 2)
	g.release <- struct{}{}
	select {
	case n := <-g.started:
		t.Fatalf("run %d: the signals during run 1 should make one run after it, not more", n)
	case <-time.After(200 * time.Millisecond):
	}
	assert.Zero(t, g.overlaps.Load(), "runs never overlap")
	sendSignal(t, sigs, syscall.SIGHUP) // a signal after the runs makes a new one
	g.waitRun(t, 3)
	g.release <- struct{}{}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}
