//go:build linux

package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestNextDeadline: the loop sleeps until the earliest of the restart
// backoff, a live instance's readyBy, delayAt or killAt, and, while ended
// instances have processes left, at most a second (their sweep), sooner
// if one of them is due to be killed; with nothing due, an hour.
func TestNextDeadline(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tc := range []struct {
		name      string
		restartAt time.Time
		instances []*instance
		ended     []*instance
		want      time.Duration
	}{
		{name: "nothing due", want: time.Hour},
		{name: "restart backoff", restartAt: at(5 * time.Second), want: 5 * time.Second},
		{name: "ready timeout", instances: []*instance{{readyBy: at(3 * time.Second)}}, want: 3 * time.Second},
		{name: "ready delay before ready timeout",
			instances: []*instance{{readyBy: at(3 * time.Second), delayAt: at(time.Second)}}, want: time.Second},
		{name: "kill of a draining instance",
			instances: []*instance{{killAt: at(2 * time.Second)}, {readyBy: at(4 * time.Second)}}, want: 2 * time.Second},
		{name: "a deadline passed: at once", restartAt: at(time.Second),
			instances: []*instance{{killAt: at(-time.Second)}}, want: 0},
		{name: "ended instances: sweep every second", restartAt: at(5 * time.Second),
			ended: []*instance{{}}, want: time.Second},
		{name: "ended instance due to be killed", ended: []*instance{{killAt: at(200 * time.Millisecond)}},
			want: 200 * time.Millisecond},
		{name: "ended instance killed already", ended: []*instance{{killAt: at(200 * time.Millisecond), killed: true}},
			want: time.Second},
		{name: "restart before the sweep", restartAt: at(100 * time.Millisecond), ended: []*instance{{}},
			want: 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Supervisor{restartAt: tc.restartAt, instances: tc.instances, ended: tc.ended}
			assert.InDelta(t, tc.want, s.nextDeadline(), float64(100*time.Millisecond))
		})
	}
}

// TestOnTimeReadyTimeout: an upgrade whose instance is not ready by
// -ready-timeout fails once: the waiter hears ErrStartFailed, the
// instance is killed, the serving one serves on, and no deadline of the
// failed start is left, so the loop does not wake for it again.
func TestOnTimeReadyTimeout(t *testing.T) {
	s := newLoopSupervisor(t, Config{ReadyTimeout: time.Minute})
	old := servingInstance(t, s, cmdSleep)
	reply := make(chan outcome, 4)
	s.upgrade("test", reply)
	in := s.starting
	require.NotNil(t, in, "the upgrade started an instance")

	s.onTime(time.Now())
	assert.Equal(t, phaseStarting, in.phase, "not failed before -ready-timeout")
	assert.Empty(t, replies(reply), "no answer before -ready-timeout")

	in.readyBy = time.Now() // the minute has passed
	s.onTime(time.Now())
	got := replies(reply)
	require.Len(t, got, 1, "one answer at -ready-timeout")
	assert.ErrorIs(t, got[0].err, ErrStartFailed)
	assert.ErrorContains(t, got[0].err, "not ready within -ready-timeout 1m0s")
	assert.Equal(t, phaseDraining, in.phase, "the failed instance is on its way out")
	assert.True(t, in.killed, "the failed instance is killed")
	assert.Nil(t, s.starting)
	assert.Same(t, old, s.serving, "the serving instance serves on")
	assert.Greater(t, s.nextDeadline(), time.Minute, "no deadline is left of the failed start")

	s.onTime(time.Now())
	assert.Empty(t, replies(reply), "it fails once")
	ws := reapInto(t, s, in)
	assert.Equal(t, unix.SIGKILL, ws.Signal())
	assert.Equal(t, []int{old.gen}, alive(s), "only the serving instance is left")
	assert.Equal(t, 0, s.crashes, "a failed upgrade is no crash")
}

// TestOnTimeFirstStartFails: when nothing serves, a start that fails
// counts as a crash and the next start follows at once; a second
// failure in a row waits for the backoff.
func TestOnTimeFirstStartFails(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	first := startInstance(t, s, cmdSleep, nil)
	first.readyBy = time.Now()
	s.onTime(time.Now())
	assert.True(t, first.killed)
	second := s.starting
	require.NotNil(t, second, "a restart follows at once")
	assert.Equal(t, first.gen+1, second.gen)
	assert.Equal(t, "restart after a crash", second.reason)
	assert.Equal(t, 1, s.crashes)

	second.readyBy = time.Now()
	s.onTime(time.Now())
	assert.Nil(t, s.starting, "the second failure in a row waits")
	assert.Equal(t, 2, s.crashes)
	assert.WithinDuration(t, time.Now().Add(100*time.Millisecond), s.restartAt, 50*time.Millisecond)
	s.onTime(time.Now())
	assert.Nil(t, s.starting, "not before the backoff")
	s.restartAt = time.Now() // the backoff has passed
	s.onTime(time.Now())
	assert.NotNil(t, s.starting, "the restart comes at its time")
	assert.True(t, s.restartAt.IsZero())
}

// TestOnTimeReadyDelay: with -ready-delay, an instance still running at
// delayAt is ready: it serves, the one serving before drains, and the
// waiter gets the result.
func TestOnTimeReadyDelay(t *testing.T) {
	s := newLoopSupervisor(t, Config{ReadyDelay: 500 * time.Millisecond})
	old := startInstance(t, s, cmdSleep, nil)
	old.delayAt = time.Now()
	s.onTime(time.Now())
	require.Same(t, old, s.serving)
	reply := make(chan outcome, 1)
	s.upgrade("test", reply)
	in := s.starting
	require.NotNil(t, in)
	s.onTime(time.Now())
	assert.Equal(t, phaseStarting, in.phase, "not before -ready-delay")

	in.delayAt = time.Now() // the delay has passed
	s.onTime(time.Now())
	assert.Equal(t, phaseServing, in.phase)
	assert.Same(t, in, s.serving)
	assert.Nil(t, s.starting)
	assert.True(t, in.readyBy.IsZero() && in.delayAt.IsZero(), "no start deadline is left")
	assert.Equal(t, phaseDraining, old.phase, "the old instance drains")
	assert.WithinDuration(t, time.Now().Add(s.cfg.StopTimeout), old.killAt, time.Second)
	if got := replies(reply); assert.Len(t, got, 1) {
		assert.NoError(t, got[0].err)
		assert.Equal(t, UpgradeResult{PID: in.pid, Generation: in.gen, OldPID: old.pid, Took: got[0].res.Took}, got[0].res)
	}
	assert.Equal(t, unix.SIGTERM, reapInto(t, s, old).Signal(), "SIGTERM drains the old instance")
}

// TestStartFailedAnswersOnce: a failed start kills its running instance
// and answers every waiter once; a second failure of the same start
// answers nobody.
func TestStartFailedAnswersOnce(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	servingInstance(t, s, cmdSleep)
	r1, r2 := make(chan outcome, 2), make(chan outcome, 2)
	in := startInstance(t, s, cmdSleep, r1)
	in.waiters = append(in.waiters, r2)

	s.startFailed(in, errBoom)
	s.startFailed(in, errBoom)
	for _, r := range []chan outcome{r1, r2} {
		got := replies(r)
		if assert.Len(t, got, 1, "every waiter hears once") {
			assert.ErrorIs(t, got[0].err, ErrStartFailed)
			assert.ErrorIs(t, got[0].err, errBoom)
		}
	}
	assert.True(t, in.killed)
	assert.Equal(t, unix.SIGKILL, reapInto(t, s, in).Signal())
	assert.Contains(t, s.lastFailure, "boom")
}

// TestStartCommandMissing: a command that cannot be started fails the
// start at once, with the reason, and no instance; with nothing serving
// it is retried at once, then after the backoff.
func TestStartCommandMissing(t *testing.T) {
	s := newLoopSupervisor(t, Config{Command: cmdMissing})
	reply := make(chan outcome, 2)
	s.upgrade("test", reply)
	got := replies(reply)
	require.Len(t, got, 1)
	assert.ErrorIs(t, got[0].err, ErrStartFailed)
	assert.ErrorContains(t, got[0].err, cmdMissing[0])
	assert.Empty(t, s.instances)
	assert.Nil(t, s.starting)
	assert.Equal(t, 2, s.crashes, "the failure and its immediate retry")
	assert.False(t, s.restartAt.IsZero(), "the next retry waits for the backoff")
}

// TestCancelStart: an Upgrade call whose context ends fails the start it
// waits for, and only that one: the instance is killed and the call
// hears why.
func TestCancelStart(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	servingInstance(t, s, cmdSleep)
	reply, stranger := make(chan outcome, 2), make(chan outcome, 2)
	in := startInstance(t, s, cmdSleep, reply)

	s.cancelStart(stranger, context.DeadlineExceeded)
	assert.Same(t, in, s.starting, "a call that waits for another start cancels nothing")
	assert.Empty(t, replies(reply))

	s.cancelStart(reply, context.DeadlineExceeded)
	if got := replies(reply); assert.Len(t, got, 1) {
		assert.ErrorIs(t, got[0].err, ErrStartFailed)
		assert.ErrorIs(t, got[0].err, context.DeadlineExceeded)
		assert.ErrorContains(t, got[0].err, "cancelled")
	}
	assert.Nil(t, s.starting)
	assert.Equal(t, unix.SIGKILL, reapInto(t, s, in).Signal(), "the cancelled instance is killed")
	assert.Empty(t, replies(stranger))
}

// TestOnTimeStopTimeout: a draining instance still running at its killAt
// (-stop-timeout after SIGTERM) has its process group killed, once: no
// deadline of it is left for the loop to wake for.
func TestOnTimeStopTimeout(t *testing.T) {
	s := newLoopSupervisor(t, Config{StopTimeout: time.Minute})
	old := servingInstance(t, s, cmdNoTERM)
	waitIgnores(t, old.pid, unix.SIGTERM)
	in := servingInstance(t, s, cmdSleep)
	require.Equal(t, phaseDraining, old.phase, "replaced, it drains")
	s.onTime(time.Now())
	assert.False(t, old.killed, "not before -stop-timeout")

	old.killAt = time.Now() // the minute has passed
	s.onTime(time.Now())
	assert.True(t, old.killed, "killed at -stop-timeout")
	assert.True(t, old.killAt.IsZero(), "nothing more to wait for but its exit")
	assert.Greater(t, s.nextDeadline(), time.Minute, "no deadline is left of it")
	assert.Equal(t, unix.SIGKILL, reapInto(t, s, old).Signal())
	assert.Same(t, in, s.serving)
	assert.Equal(t, 0, s.crashes, "a replaced instance that is killed is no crash")
}
