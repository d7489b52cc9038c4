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

// TestChildFailReasonSurvivesItsExit is a regression test: a next
// generation that calls Fail and exits at once, as Fail's doc tells it
// to, had its reason dropped when waitReady saw the exit before the
// message and returned ErrChildFailed (fixed in 584c397). waitReady gets
// both at once here: a reaped child and a closed pipe holding the reason.
func TestChildFailReasonSurvivesItsExit(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	c := reapedChild(t)
	for i := range 20 {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		_, err = w.Write(append([]byte{wire.FailByte}, childFailReason...))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		err = u.waitReady(context.Background(), c, r)
		assert.ErrorIs(t, err, ErrChildFailed, "try %d: a child that said why it failed should be reported as failed", i)
		if assert.Error(t, err) {
			assert.Contains(t, err.Error(), childFailReason, "try %d: the child's reason should reach the caller", i)
		}
	}
}

// TestChildExitWithoutWordIsReportedAtOnce pins a bug: a next generation
// that closes its readiness pipe without a word and exits (a crash, an
// os.Exit before Ready) makes Upgrade wait the whole ready timeout when
// the reader sees the EOF before the exit: waitReady then sets msgs to
// nil, and on the exit waits for a message from the nil channel or the
// timer. The caller learns of the crash a minute late by default, and
// Shutdown cannot cancel the wait.
func TestChildExitWithoutWordIsReportedAtOnce(t *testing.T) {
	const readyTimeout = 3 * time.Second
	u := newColdUpgrader(t, Options{ReadyTimeout: readyTimeout})
	reaped := reapedChild(t)
	for i := range 3 {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		require.NoError(t, w.Close(), "the child's end closes without a word")
		// The exit is seen after the EOF. Nothing signals that waitReady
		// has read the EOF: the delay makes that order near certain, and
		// the other order passes.
		c := &child{id: reaped.id, end: reaped.end, err: reaped.err, exited: make(chan struct{})}
		exit := time.AfterFunc(50*time.Millisecond, func() { close(c.exited) })
		start := time.Now()
		err = u.waitReady(context.Background(), c, r)
		exit.Stop()
		assert.ErrorIs(t, err, ErrChildFailed, "try %d: a child that exits without a word has exited", i)
		assert.Less(t, time.Since(start), readyTimeout/2, "try %d: the exit should be reported at once, not at the ready timeout", i)
	}
}

// reapedChild returns a child that has run (the test binary running no
// test) and been reaped, as waitReady sees one that exited.
func reapedChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(testBinary(t), "-test.run=^$")
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
	return c
}

// cmdChild is the child waitReady sees for a process started by cmd.
func cmdChild(cmd *exec.Cmd) *child {
	return &child{id: cmd.Process.Pid, end: func() { cmd.Process.Kill() }, exited: make(chan struct{})}
}

// TestCancelAfterReadyWordStands pins a race that cut a hand-off: a stop
// signal (ctx's end) that came after the child wrote ReadyByte but before
// this generation read it killed the child, which by then served and may
// have accepted connections. A word already in the pipe counts.
func TestCancelAfterReadyWordStands(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	for i := range 20 {
		cmd := exec.Command("sleep", "30")
		require.NoError(t, cmd.Start(), "starting a child that stays")
		c := cmdChild(cmd)
		go func() {
			c.err = cmd.Wait()
			close(c.exited)
		}()
		r, w, err := os.Pipe()
		require.NoError(t, err)
		_, err = w.Write([]byte{wire.ReadyByte})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // ended before the word was read
		err = u.waitReady(ctx, c, r)
		assert.NoError(t, err, "try %d: the child said ready before the end: the hand-off stands", i)
		select {
		case <-c.exited:
			t.Fatalf("try %d: the child that said ready was killed: %v", i, c.err)
		default:
		}
		cmd.Process.Kill()
		<-c.exited
		w.Close()
	}
}
