//go:build linux

package supervisor

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestExited: what the end of an instance's process means by its phase.
// A starting one is a failed start (a restart only if nothing serves); a
// serving one is a crash: the next start follows at once after the first
// death in a row, then after a backoff that doubles, and a crash after
// stableAfter of serving counts as the first again; a draining one has
// simply left.
func TestExited(t *testing.T) {
	const none = -1 // no restart
	for _, tc := range []struct {
		name        string
		phase       phase
		otherServes bool          // another instance serves meanwhile
		servedFor   time.Duration // serving: since when
		crashes     int           // deaths in a row before this one
		wantCrashes int
		wantRestart time.Duration // 0: an instance starts at once; none: nothing is scheduled
		wantFailure string
	}{
		{name: "starting, another serves: a failed upgrade", phase: phaseStarting, otherServes: true,
			wantRestart: none, wantFailure: "exited (exit status 3) before it was ready"},
		{name: "starting, nothing serves: restart at once", phase: phaseStarting,
			wantCrashes: 1, wantFailure: "exited (exit status 3) before it was ready"},
		{name: "serving, first crash: restart at once", phase: phaseServing, servedFor: time.Second,
			wantCrashes: 1, wantFailure: "died while serving: exit status 3"},
		{name: "serving, second crash in a row: 100ms", phase: phaseServing, servedFor: time.Second, crashes: 1,
			wantCrashes: 2, wantRestart: 100 * time.Millisecond, wantFailure: "died while serving"},
		{name: "serving, third crash in a row: 200ms", phase: phaseServing, servedFor: time.Second, crashes: 2,
			wantCrashes: 3, wantRestart: 200 * time.Millisecond, wantFailure: "died while serving"},
		{name: "serving past stableAfter: the count starts over", phase: phaseServing,
			servedFor: stableAfter + time.Second, crashes: 5, wantCrashes: 1, wantFailure: "died while serving"},
		{name: "draining: it has left", phase: phaseDraining, otherServes: true, wantRestart: none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopSupervisor(t, Config{})
			var other *instance
			if tc.otherServes {
				other = servingInstance(t, s, cmdSleep)
			}
			in := startInstance(t, s, cmdExit3, nil)
			switch tc.phase {
			case phaseServing:
				s.ready(in, "test")
				in.since = time.Now().Add(-tc.servedFor)
			case phaseDraining:
				in.phase, s.starting = phaseDraining, nil
			}
			s.crashes = tc.crashes
			assert.Equal(t, 3, reapInto(t, s, in).ExitStatus())

			assert.NotContains(t, alive(s), in.gen, "the instance is gone")
			assert.Contains(t, s.ended, in, "what it left is swept")
			assert.Equal(t, tc.wantCrashes, s.crashes, "crashes in a row")
			assert.Contains(t, s.lastFailure, tc.wantFailure)
			switch {
			case tc.wantRestart == none:
				assert.Nil(t, s.starting, "no start")
				assert.True(t, s.restartAt.IsZero(), "no restart scheduled")
			case tc.wantRestart == 0:
				if assert.NotNil(t, s.starting, "an instance starts at once") {
					assert.Equal(t, in.gen+1, s.starting.gen)
				}
				assert.True(t, s.restartAt.IsZero())
			default:
				assert.Nil(t, s.starting, "the restart waits")
				assert.WithinDuration(t, time.Now().Add(tc.wantRestart), s.restartAt, 50*time.Millisecond)
			}
			if other != nil {
				assert.Same(t, other, s.serving, "the other instance serves on")
			}
		})
	}
}

// TestStopStatus: a stop forwards the signal to every instance and
// answers the waiter of a start with ErrStopping; the exit status is
// that of the instance that served when the stop began, and a second
// stop signal is forwarded again.
func TestStopStatus(t *testing.T) {
	s := newLoopSupervisor(t, Config{StopTimeout: time.Minute})
	draining := servingInstance(t, s, cmdSleep)
	serving := servingInstance(t, s, cmdNoTERM)
	waitIgnores(t, serving.pid, unix.SIGTERM)
	require.Equal(t, phaseDraining, draining.phase)
	reply := make(chan outcome, 2)
	starting := startInstance(t, s, cmdSleep, reply)

	s.stop(unix.SIGTERM)
	assert.True(t, s.stopping)
	assert.Nil(t, s.serving)
	assert.Nil(t, s.starting)
	if got := replies(reply); assert.Len(t, got, 1, "the start's waiter hears once") {
		assert.ErrorIs(t, got[0].err, ErrStopping)
	}
	for _, in := range []*instance{draining, serving, starting} {
		assert.Equal(t, phaseDraining, in.phase)
		assert.True(t, in.readyBy.IsZero() && in.delayAt.IsZero(), "no start deadline")
		assert.WithinDuration(t, time.Now().Add(time.Minute), in.killAt, time.Second, "killed at -stop-timeout")
	}
	assert.Equal(t, unix.SIGTERM, reapInto(t, s, draining).Signal(), "forwarded to a draining instance")
	assert.Equal(t, unix.SIGTERM, reapInto(t, s, starting).Signal(), "forwarded to a starting instance")
	assert.Equal(t, 0, s.exitStatus, "only the instance that served sets the status")

	s.stop(unix.SIGINT)
	assert.Equal(t, unix.SIGINT, reapInto(t, s, serving).Signal(), "a second stop is forwarded again")
	assert.Equal(t, 128+int(unix.SIGINT), s.exitStatus, "the status of the instance that served")
	assert.Empty(t, s.instances)
}

// waitIgnores waits until process pid ignores sig.
func waitIgnores(t *testing.T, pid int, sig unix.Signal) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err == nil && mask&(1<<(sig-1)) != 0 {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d does not ignore %v", pid, sig)
}

// TestStopNothingServes: a stop when nothing serves exits 1 after a
// failure, 0 without one, unless an instance exits meanwhile: then its
// status counts.
func TestStopNothingServes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failure  string
		instance bool
		want     int
	}{
		{name: "no failure", want: 0},
		{name: "after a failure", failure: "generation 1: boom", want: 1},
		{name: "an instance exits", failure: "generation 1: boom", instance: true, want: 128 + int(unix.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopSupervisor(t, Config{})
			s.lastFailure = tc.failure
			var in *instance
			if tc.instance {
				in = startInstance(t, s, cmdSleep, nil)
			}
			s.stop(unix.SIGTERM)
			if in != nil {
				reapInto(t, s, in)
			}
			assert.Equal(t, tc.want, s.exitStatus)
		})
	}
}

// noteFixture is the supervisor of a TestOnNote case: an instance that
// drains (old), one that serves and, if an upgrade runs, one that starts.
type noteFixture struct {
	s                      *Supervisor
	old, serving, starting *instance
	before                 Status // the snapshot before the message
}

func fromOld(f noteFixture) int      { return f.old.pid }
func fromServing(f noteFixture) int  { return f.serving.pid }
func fromStarting(f noteFixture) int { return f.starting.pid }

// unchanged: the message changed nothing the loop keeps.
func unchanged(t *testing.T, f noteFixture) {
	assert.Equal(t, f.before, f.s.snapshot(), "the message is ignored")
	assert.Same(t, f.serving, f.s.serving, "the serving instance serves on")
}

// TestOnNote: only instances are listened to; READY=1 counts only from
// the starting instance, STATUS= is kept, and STOPPING=1 from the
// serving instance (not during a stop) makes it drain and starts a
// replacement unless one starts already.
func TestOnNote(t *testing.T) {
	for _, tc := range []struct {
		name     string
		starting bool                          // an upgrade runs
		prepare  func(f noteFixture)           // before the message
		from     func(f noteFixture) int       // the sender
		fields   map[string]string             // the message
		check    func(*testing.T, noteFixture) // what must hold after
	}{
		{name: "from no instance", starting: true, from: func(noteFixture) int { return os.Getpid() },
			fields: map[string]string{"READY": "1", "STOPPING": "1", "STATUS": "x"}, check: unchanged},
		{name: "READY=1 from the starting one", starting: true, from: fromStarting,
			fields: map[string]string{"READY": "1"}, check: func(t *testing.T, f noteFixture) {
				assert.Same(t, f.starting, f.s.serving, "it serves")
				assert.Nil(t, f.s.starting)
				assert.Equal(t, phaseDraining, f.serving.phase, "the one before drains")
			}},
		{name: "READY=1 from the serving one", starting: true, from: fromServing,
			fields: map[string]string{"READY": "1"}, check: unchanged},
		{name: "READY=1 from a draining one", starting: true, from: fromOld,
			fields: map[string]string{"READY": "1"}, check: unchanged},
		{name: "STATUS=", from: fromServing, fields: map[string]string{"STATUS": "42 clients"},
			check: func(t *testing.T, f noteFixture) { assert.Equal(t, "42 clients", f.serving.status) }},
		{name: "STOPPING=1 from the serving one", from: fromServing, fields: map[string]string{"STOPPING": "1"},
			check: func(t *testing.T, f noteFixture) {
				assert.Equal(t, phaseDraining, f.serving.phase, "it drains")
				assert.WithinDuration(t, time.Now().Add(f.s.cfg.StopTimeout), f.serving.killAt, time.Second)
				assert.Nil(t, f.s.serving)
				if assert.NotNil(t, f.s.starting, "a replacement starts") {
					assert.Equal(t, "replacing an instance that stopped on its own", f.s.starting.reason)
				}
			}},
		{name: "STOPPING=1 from the serving one, an upgrade runs", starting: true, from: fromServing,
			fields: map[string]string{"STOPPING": "1"}, check: func(t *testing.T, f noteFixture) {
				assert.Equal(t, phaseDraining, f.serving.phase)
				assert.Same(t, f.starting, f.s.starting, "the starting instance will serve; no other starts")
			}},
		{name: "STOPPING=1 from the starting one", starting: true, from: fromStarting,
			fields: map[string]string{"STOPPING": "1"}, check: unchanged},
		{name: "STOPPING=1 during a stop", from: fromServing, fields: map[string]string{"STOPPING": "1"},
			prepare: func(f noteFixture) { f.s.stopping = true }, check: unchanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopSupervisor(t, Config{})
			f := noteFixture{s: s, old: servingInstance(t, s, cmdSleep)}
			f.serving = servingInstance(t, s, cmdSleep)
			if tc.starting {
				f.starting = startInstance(t, s, cmdSleep, nil)
			}
			if tc.prepare != nil {
				tc.prepare(f)
			}
			f.before = s.snapshot()
			s.onNote(note{pid: tc.from(f), fields: tc.fields})
			tc.check(t, f)
		})
	}
}

// TestSetMain: MAINPID= makes a process of the instance its main one;
// anything else is ignored: no number, no process, the supervisor,
// another instance. The main process is then watched: its death, reaped
// by its own parent, ends the instance.
func TestSetMain(t *testing.T) {
	s := newLoopSupervisor(t, Config{})
	other := servingInstance(t, s, cmdSleep)
	in := startInstance(t, s, cmdForks, nil)
	child := waitChild(t, in.pid)
	for _, tc := range []struct {
		name, value string
		want        int
	}{
		{"not a number", "x", in.pid},
		{"zero", "0", in.pid},
		{"negative", "-5", in.pid},
		{"no such process", strconv.Itoa(1 << 30), in.pid},
		{"the supervisor itself", strconv.Itoa(os.Getpid()), in.pid},
		{"another instance", strconv.Itoa(other.pid), in.pid},
		{"its main process already", strconv.Itoa(in.pid), in.pid},
		{"a process of the instance", strconv.Itoa(child), child},
	} {
		s.setMain(in, tc.value)
		assert.Equal(t, tc.want, in.main, "MAINPID=%s: %s", tc.value, tc.name)
	}
	assert.Same(t, in, s.find(child), "the main process names the instance")

	require.NoError(t, unix.Kill(child, unix.SIGKILL))
	select {
	case req := <-s.reqs: // from watchMain
		req()
	case <-time.After(5 * time.Second):
		t.Fatal("the death of the main process was not reported")
	}
	assert.NotContains(t, alive(s), in.gen, "the instance has ended")
	assert.Contains(t, s.lastFailure, "reaped by its own parent: status unknown")
	assert.Same(t, other, s.serving)
}

// waitChild returns the first child of pid, once it has one.
func waitChild(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if kids := childrenOf(pid); len(kids) > 0 {
			return kids[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d started no child", pid)
	return 0
}

// TestUpgradeRefused: an upgrade is refused during a stop, while an
// instance starts, and when it would pass -max-instances; nothing starts.
func TestUpgradeRefused(t *testing.T) {
	full := []*instance{{gen: 1}, {gen: 2}, {gen: 3}, {gen: 4}}
	for _, tc := range []struct {
		name    string
		prepare func(s *Supervisor)
		want    error
		text    string
	}{
		{"stopping", func(s *Supervisor) { s.stopping = true }, ErrStopping, "stopping"},
		{"an instance starts", func(s *Supervisor) {
			s.starting = &instance{pid: 42, gen: 2, phase: phaseStarting}
			s.instances = []*instance{s.starting}
		}, ErrUpgradeInProgress, "generation 2 (pid 42)"},
		{"max instances", func(s *Supervisor) { s.instances = full },
			ErrTooManyInstances, "4, the most -max-instances allows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopSupervisor(t, Config{MaxInstances: 4})
			tc.prepare(s)
			instances, gen := alive(s), s.nextGen
			reply := make(chan outcome, 2)
			s.upgrade("test", reply)
			if got := replies(reply); assert.Len(t, got, 1) {
				assert.ErrorIs(t, got[0].err, tc.want)
				assert.ErrorContains(t, got[0].err, tc.text)
			}
			assert.Equal(t, instances, alive(s), "nothing started")
			assert.Equal(t, gen, s.nextGen)
		})
	}
}

// TestUpgradeStarts: an upgrade below -max-instances starts the next
// generation, also when nothing serves.
func TestUpgradeStarts(t *testing.T) {
	s := newLoopSupervisor(t, Config{MaxInstances: 3})
	s.upgrade("test", nil)
	require.NotNil(t, s.starting)
	assert.Equal(t, "upgrade while nothing serves", s.starting.reason)
	s.ready(s.starting, "test")
	s.upgrade("test", nil)
	require.NotNil(t, s.starting)
	assert.Equal(t, "upgrade", s.starting.reason)
	s.ready(s.starting, "test")
	assert.Equal(t, []int{1, 2}, alive(s), "one draining, one serving")
	s.upgrade("test", nil)
	assert.Equal(t, []int{1, 2, 3}, alive(s), "the third of three")
}
