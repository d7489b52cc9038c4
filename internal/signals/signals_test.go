//go:build linux

package signals

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ioTimeout bounds each wait for a signal.
const ioTimeout = 5 * time.Second

// TestSignalMergerQueue: pending signals coalesce per signal number (a
// stop signal is kept twice), and stop signals go before the others,
// each kind in arrival order.
func TestSignalMergerQueue(t *testing.T) {
	hup, usr1, usr2, term, intr := syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT
	for _, tc := range []struct {
		name string
		in   []os.Signal
		want []os.Signal
	}{
		{"a burst coalesces", []os.Signal{hup, hup, hup, hup, hup}, []os.Signal{hup}},
		{"a stop after a burst goes first", []os.Signal{hup, hup, hup, hup, hup, term}, []os.Signal{term, hup}},
		{"arrival order otherwise", []os.Signal{usr2, hup, usr1, hup, usr2}, []os.Signal{usr2, hup, usr1}},
		{"stop signals in their order", []os.Signal{hup, intr, usr1, term}, []os.Signal{intr, term, hup, usr1}},
		{"a stop signal is kept twice", []os.Signal{term, hup, term, term}, []os.Signal{term, term, hup}},
		{"nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &merger{stop: []os.Signal{term, intr}}
			for _, sig := range tc.in {
				m.add(sig)
			}
			assert.Equal(t, tc.want, m.pending, "the pending signals after %v", tc.in)
		})
	}
}

// recvSignals reads signals from c until it has seen want, or fails
// after ioTimeout; it returns what it read.
func recvSignals(t *testing.T, c <-chan os.Signal, want os.Signal) []os.Signal {
	t.Helper()
	var got []os.Signal
	timeout := time.After(ioTimeout)
	for {
		select {
		case sig := <-c:
			got = append(got, sig)
			if sig == want {
				return got
			}
		case <-timeout:
			require.FailNow(t, "signal lost", "%v never arrived; got %v", want, got)
		}
	}
}

// TestNotifySignalsLosesNoStop: real signals, nobody reading while they
// arrive: 50 SIGHUP then SIGTERM, and the SIGTERM is delivered; a signal
// given as extra (SIGUSR2, which would kill the process otherwise) is
// delivered too.
func TestNotifySignalsLosesNoStop(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	c := Notify(done, []os.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR2}, []os.Signal{syscall.SIGTERM})
	for range 50 {
		require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	}
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	recvSignals(t, c, syscall.SIGTERM)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR2))
	got := recvSignals(t, c, syscall.SIGUSR2)
	assert.Equal(t, syscall.SIGUSR2, got[len(got)-1], "the extra signal is registered")
}
