//go:build linux

package supervisor

import (
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// TestHoldPending: the signals waiting when a self-upgrade is about to
// exec are all taken: a stop signal among them cancels the exec, SIGUSR1
// and SIGCHLD are kept for after it, another SIGUSR2 is dropped.
func TestHoldPending(t *testing.T) {
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	sigs := make(chan os.Signal, 8)
	var h heldSignals
	assert.False(t, s.holdPending(sigs, &h), "nothing waits")
	for _, sig := range []os.Signal{unix.SIGUSR1, unix.SIGCHLD, unix.SIGUSR2} {
		sigs <- sig
	}
	assert.False(t, s.holdPending(sigs, &h), "no stop signal")
	assert.Equal(t, heldSignals{upgrade: true, reap: true}, h)
	sigs <- unix.SIGTERM
	sigs <- unix.SIGINT
	assert.True(t, s.holdPending(sigs, &h), "a stop signal")
	assert.Equal(t, unix.SIGTERM, h.stop, "the first stop signal is the one acted on")
	assert.Empty(t, sigs, "every waiting signal is taken")
}
