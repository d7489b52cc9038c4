//go:build linux

package supervisor

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// failAgain lets the backoff pass and runs the restart it waits for, as
// the loop does at restartAt.
func failAgain(s *Supervisor) {
	s.restartAt = time.Now()
	s.onTime(time.Now())
}

// TestStartLimit pins issue #20's "tcpgrace run -- /nonexistent retries
// forever": a command that never became ready is started StartLimit
// times in a row, then the supervisor gives up: it stops (nothing more
// starts) and will exit 1, the last failure kept. A negative StartLimit
// retries on.
func TestStartLimit(t *testing.T) {
	for _, limit := range []int{1, 3, DefaultStartLimit} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			s := newLoopSupervisor(t, Config{Command: cmdMissing, StartLimit: limit})
			s.start("first start", nil) // fails, and retries at once once
			for i := 0; i < 2*limit && !s.stopping; i++ {
				failAgain(s)
			}
			assert.True(t, s.gaveUp, "gave up")
			assert.True(t, s.stopping, "and stops")
			assert.Equal(t, limit, s.crashes, "after exactly %d failed starts", limit)
			assert.Nil(t, s.starting, "nothing starts")
			assert.True(t, s.restartAt.IsZero(), "no restart is due")
			assert.Contains(t, s.lastFailure, cmdMissing[0], "the last failure names the command")
			failAgain(s)
			assert.Nil(t, s.starting, "nor later")
		})
	}
	t.Run("no limit", func(t *testing.T) {
		s := newLoopSupervisor(t, Config{Command: cmdMissing, StartLimit: -1})
		s.start("first start", nil)
		for range 2 * DefaultStartLimit {
			failAgain(s)
		}
		assert.False(t, s.gaveUp || s.stopping, "it retries on")
		assert.Equal(t, 2+2*DefaultStartLimit, s.crashes)
		assert.False(t, s.restartAt.IsZero(), "the next retry is due")
	})
}

// TestStartLimitAfterReady: once an instance has been ready, the start
// limit no longer applies: after the serving instance dies, restarts that
// fail keep the backoff, however many.
func TestStartLimitAfterReady(t *testing.T) {
	s := newLoopSupervisor(t, Config{StartLimit: 2})
	in := servingInstance(t, s, cmdSleep)
	s.cfg.Command = cmdMissing // the restarts fail from now on
	require.NoError(t, unix.Kill(in.pid, unix.SIGKILL))
	reapInto(t, s, in)
	for range 3 * s.cfg.StartLimit {
		failAgain(s)
	}
	assert.False(t, s.gaveUp || s.stopping, "it restarts on")
	assert.Greater(t, s.crashes, s.cfg.StartLimit)
	assert.False(t, s.restartAt.IsZero(), "after a backoff")
}

// TestStartLimitConfig: the zero value is the default limit.
func TestStartLimitConfig(t *testing.T) {
	c := Config{Listen: []Listen{{Network: "tcp", Address: "127.0.0.1:0"}}, Command: cmdSleep}
	require.NoError(t, c.check())
	assert.Equal(t, DefaultStartLimit, c.StartLimit)
}

// TestForwardHUP: a reload (SIGHUP, or a control request) goes to the
// serving instance and names it; with none serving, or while stopping,
// it is refused for now and nothing is signalled.
func TestForwardHUP(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	_, err := s.forwardHUP()
	assert.ErrorIs(t, err, ErrNotServing, "nothing serves yet")
	assert.Equal(t, control.CodeRefused, errorReply(err).Code, "refused for now")

	in := servingInstance(t, s, cmdSleep)
	res, err := s.forwardHUP()
	require.NoError(t, err)
	assert.Equal(t, ReloadResult{PID: in.main, Generation: in.gen}, res)
	assert.Equal(t, unix.SIGHUP, reapInto(t, s, in).Signal(), "the instance got SIGHUP")

	s.stopping = true
	_, err = s.forwardHUP()
	assert.ErrorIs(t, err, ErrStopping)
}

// TestErrorReply: refusals for now carry the code refused, other
// failures failed.
func TestErrorReply(t *testing.T) {
	for _, err := range []error{ErrStopping, ErrUpgradeInProgress, ErrTooManyInstances, ErrNotServing,
		fmt.Errorf("%w: generation 2", ErrUpgradeInProgress)} {
		assert.Equal(t, control.CodeRefused, errorReply(err).Code, "%v", err)
	}
	for _, err := range []error{ErrStartFailed, errRequesterGone, errBoom} {
		assert.Equal(t, control.CodeFailed, errorReply(err).Code, "%v", err)
	}
}
