//go:build linux

package tcpgrace

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStateRefusals pins which operation each state refuses, and with
// which error: the one switch every refusal comes from.
func TestStateRefusals(t *testing.T) {
	want := map[state][3]error{ // Listen, Ready, Upgrade
		starting:  {nil, nil, ErrNotReady},
		readying:  {nil, ErrAlreadyReady, ErrNotReady},
		serving:   {nil, ErrAlreadyReady, nil},
		upgrading: {ErrUpgradeInProgress, ErrAlreadyReady, ErrUpgradeInProgress},
		handedOff: {ErrUpgraded, ErrUpgraded, ErrUpgraded},
		closed:    {ErrClosed, ErrClosed, ErrClosed},
	}
	for s, errs := range want {
		for o, err := range errs {
			assert.Equal(t, err, s.refuse(op(o)), "state %v, op %d", s, o)
		}
	}
}

// TestStateMoves pins the transitions: forward only, a failed upgrade
// back to serving, and nothing out of closed.
func TestStateMoves(t *testing.T) {
	u := &Upgrader{exit: make(chan struct{})}
	for _, step := range []struct {
		to state
		ok bool
	}{
		{serving, false}, {readying, true}, {serving, true}, {upgrading, true}, {closed, false},
		{serving, true}, {upgrading, true}, {handedOff, true}, {serving, false}, {closed, true},
		{starting, false}, {serving, false}, {closed, false},
	} {
		from := u.state
		assert.Equal(t, step.ok, u.moveLocked(step.to), "%v -> %v", from, step.to)
	}
}

// TestStatesThroughAPI walks one Upgrader through the API and checks the
// state after each call, and the refusals it meets.
func TestStatesThroughAPI(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	assert.Equal(t, starting, u.state)
	assert.ErrorIs(t, u.Upgrade(context.Background()), ErrNotReady)
	_, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	assert.Equal(t, serving, u.state)
	assert.ErrorIs(t, u.Ready(), ErrAlreadyReady)
	require.NoError(t, u.Close())
	assert.Equal(t, closed, u.state)
	_, err = u.Listen("web2", "tcp", loopback)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, u.Upgrade(context.Background()), ErrClosed)
	assert.ErrorIs(t, u.Ready(), ErrClosed)
}

// TestErrorsSayTcpgraceOnce: no error of the package says "tcpgrace: "
// twice, and each still matches its sentinel.
func TestErrorsSayTcpgraceOnce(t *testing.T) {
	u := newColdUpgrader(t, Options{PIDFile: filepath.Join(t.TempDir(), "missing", "x.pid")})
	_, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	_, conflict := u.Listen("web", "tcp", "127.0.0.1:1")
	_, badName := u.Listen("", "tcp", loopback)
	incomplete := u.Ready() // a first generation serves without its PID file
	require.NoError(t, u.Close())
	_, closedErr := u.Listen("web2", "tcp", loopback)
	for _, c := range []struct {
		err      error
		sentinel error
	}{
		{conflict, ErrNameConflict}, {badName, nil}, {incomplete, ErrReadyIncomplete}, {closedErr, ErrClosed},
		{wrap(ErrServeFailed, errors.New("tcpgrace: accept: boom")), ErrServeFailed},
	} {
		require.Error(t, c.err)
		assert.Equal(t, 1, strings.Count(c.err.Error(), "tcpgrace: "), "one prefix in %q", c.err)
		assert.NotContains(t, c.err.Error(), "error occurred", "one line: %q", c.err)
		if c.sentinel != nil {
			assert.ErrorIs(t, c.err, c.sentinel)
		}
	}
	assert.ErrorIs(t, incomplete, os.ErrNotExist, "the cause is still there for errors.Is")
}

// TestDefaultLoggerShowsFailures: without Options.Logger, warnings and
// errors reach slog.Default() and info records do not; a discard
// handler silences everything.
func TestDefaultLoggerShowsFailures(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	u := newColdUpgrader(t, Options{PIDFile: filepath.Join(t.TempDir(), "missing", "x.pid")})
	assert.ErrorIs(t, u.Ready(), ErrReadyIncomplete)
	assert.Contains(t, buf.String(), `level=ERROR msg="ready failed"`, "a failed Ready is logged")
	assert.NotContains(t, buf.String(), "level=INFO", "info records stay out of the default logger")

	buf.Reset()
	quiet := newColdUpgrader(t, Options{Logger: slog.New(slog.DiscardHandler), PIDFile: filepath.Join(t.TempDir(), "missing", "x.pid")})
	assert.Error(t, quiet.Ready())
	assert.Empty(t, buf.String(), "a discard handler silences the Upgrader")
}
