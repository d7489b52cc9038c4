//go:build linux

package supervisor

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain makes the test binary the exec helper when the supervisor
// under test starts an instance (spawn runs /proc/self/exe with ExecArg,
// as the tcpgrace command dispatches it).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ExecArg {
		os.Exit(ExecApp(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// Commands the instances of the loop tests run.
var (
	cmdSleep   = []string{"sleep", "30"}
	cmdExit3   = []string{"sh", "-c", "exit 3"}
	cmdNoTERM  = []string{"sh", "-c", "trap '' TERM; exec sleep 30"} // ignores SIGTERM
	cmdForks   = []string{"sh", "-c", "sleep 30 & wait"}             // a second process in its group
	cmdMissing = []string{"/nonexistent/tcpgrace-test-command"}
)

// newLoopSupervisor is a Supervisor for calling the methods of its loop
// directly, as Run would: no sockets, no notify or control socket, no
// service manager above, and instances that run cfg.Command (default
// cmdSleep) through the exec helper, as in production. Run is never
// called, so nothing but the test touches its state. When the test ends
// every process it started is killed and reaped, and no goroutine may be
// left.
func newLoopSupervisor(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	if cfg.Command == nil {
		cfg.Command = cmdSleep
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.MaxInstances == 0 {
		cfg.MaxInstances = DefaultMaxInstances
	}
	log := slog.New(slog.DiscardHandler)
	s := &Supervisor{cfg: cfg, log: log, mgr: &manager{},
		notes: make(chan note, 64), reqs: make(chan func()), done: make(chan struct{}),
		strays: &instance{phase: phaseDraining}, metrics: newRunMetrics(time.Now(), nil)}
	s.watchEvents()
	t.Cleanup(func() {
		close(s.done) // a watchMain still running hears that the loop is over
		killChildren(t)
	})
	return s
}

// killChildren kills the process group of every child of the test that
// leads its own session (every instance does) and reaps it.
func killChildren(t *testing.T) {
	self := os.Getpid()
	for _, c := range below(self)[self] {
		if c.SID != c.PID {
			continue
		}
		unix.Kill(-c.PID, unix.SIGKILL)
		waitExit(t, c.PID)
	}
}

// waitExit reaps the child pid and returns how it ended.
func waitExit(t *testing.T, pid int) syscall.WaitStatus {
	t.Helper()
	type result struct {
		ws  syscall.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		done <- result{ws, err}
	}()
	select {
	case r := <-done:
		require.NoError(t, r.err, "reaping %d", pid)
		return r.ws
	case <-time.After(5 * time.Second):
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
		<-done
		t.Fatalf("process %d did not exit within 5s", pid)
		return 0
	}
}

// reapInto waits for the exit of in's first process and tells the loop,
// as reap does after a SIGCHLD.
func reapInto(t *testing.T, s *Supervisor, in *instance) syscall.WaitStatus {
	t.Helper()
	ws := waitExit(t, in.pid)
	s.exited(in.pid, ws)
	return ws
}

// startInstance starts an instance of command as the loop does and
// returns it; it is s.starting.
func startInstance(t *testing.T, s *Supervisor, command []string, reply chan<- outcome) *instance {
	t.Helper()
	s.cfg.Command = command
	before := len(s.instances)
	s.start("test", reply)
	require.Len(t, s.instances, before+1, "an instance of %v started", command)
	in := s.instances[before]
	require.Same(t, in, s.starting, "the new instance is the starting one")
	return in
}

// servingInstance starts an instance of command and makes it ready.
func servingInstance(t *testing.T, s *Supervisor, command []string) *instance {
	t.Helper()
	in := startInstance(t, s, command, nil)
	s.ready(in, "test")
	require.Same(t, in, s.serving, "the ready instance serves")
	return in
}

// replies returns every outcome waiting in reply.
func replies(reply chan outcome) []outcome {
	var out []outcome
	for {
		select {
		case o := <-reply:
			out = append(out, o)
		default:
			return out
		}
	}
}

// alive lists the instances in s.instances by generation.
func alive(s *Supervisor) []int {
	gens := make([]int, len(s.instances))
	for i, in := range s.instances {
		gens[i] = in.gen
	}
	return slices.Clip(gens)
}

// errBoom is a failure the tests hand to the loop.
var errBoom = errors.New("boom")
