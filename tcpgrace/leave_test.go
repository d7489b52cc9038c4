//go:build linux

package tcpgrace

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// exitedChild returns a child that has run and been reaped, with exit
// status 0 or (a bad flag) 2.
func exitedChild(t *testing.T, fail bool) *child {
	t.Helper()
	args := []string{"-test.run=^$"}
	if fail {
		args = []string{"-test.no-such-flag"}
	}
	cmd := exec.Command(testBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envChildMode+"=") && !strings.HasPrefix(kv, "GORACE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	require.NoError(t, cmd.Start(), "starting a short-lived process should succeed")
	c := cmdChild(cmd)
	c.err = cmd.Wait()
	close(c.exited)
	require.Equal(t, fail, c.err != nil, "the child's exit status should be as asked")
	return c
}

// TestExitAfterLeavingIsNoCrash pins issue #10's ReadyGrace bug: within
// the grace, a child that said ready and then that it leaves may exit
// with any status and the hand-off stands; one that exits non-zero
// without saying so crashed while serving, and the upgrade fails.
func TestExitAfterLeavingIsNoCrash(t *testing.T) {
	u := newColdUpgrader(t, Options{ReadyGrace: 10 * time.Second})
	crashed, clean := exitedChild(t, true), exitedChild(t, false)
	tests := []struct {
		name  string
		words string
		c     *child
		stand bool
	}{
		{"ready, leaving, exit 2", "RL", crashed, true},
		{"ready, leaving, exit 0", "RL", clean, true},
		{"ready, exit 2", "R", crashed, false},
		{"ready, exit 0", "R", clean, true},
		{"ready, garbage, exit 2", "Rx", crashed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 10 { // the exit and the words arrive in either order
				r, w, err := os.Pipe()
				require.NoError(t, err)
				_, err = w.Write([]byte(tt.words))
				require.NoError(t, err)
				require.NoError(t, w.Close())
				start := time.Now()
				err = u.waitReady(context.Background(), tt.c, r)
				assert.Less(t, time.Since(start), 5*time.Second, "try %d: decided at the exit, not at the end of the grace", i)
				if tt.stand {
					assert.NoError(t, err, "try %d: the hand-off stands", i)
				} else {
					assert.ErrorIs(t, err, ErrChildFailed, "try %d: a crash of the serving child fails the upgrade", i)
				}
			}
		})
	}
}

// TestLeavingEndsTheGrace: a child that says it leaves, still running, is
// no longer watched: Upgrade's wait ends at once, and the hand-off stands.
func TestLeavingEndsTheGrace(t *testing.T) {
	u := newColdUpgrader(t, Options{ReadyGrace: time.Minute})
	ran := exitedChild(t, true)
	c := &child{id: ran.id, end: ran.end, exited: make(chan struct{})} // never exits, as far as waitReady knows
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Write([]byte{wire.ReadyByte, wire.LeavingByte})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- u.waitReady(context.Background(), c, r) }()
	select {
	case err := <-done:
		assert.NoError(t, err, "the hand-off stands")
	case <-time.After(10 * time.Second):
		t.Fatal("waitReady kept watching a child that said it leaves")
	}
}
