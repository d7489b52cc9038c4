package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The processes of tcpgrace run's instances (issue #18): what an
// instance started is stopped with it, and MAINPID= names a process of
// the instance that says it, whose death is seen even when its own
// parent reaps it.

func init() {
	ownRoles["run-forker"] = playRunForker
	ownRoles["run-worker"] = playRunWorker
	ownRoles["run-mainpid"] = playRunMainPID
	ownRoles["run-daemon"] = playRunDaemon
}

// The roles of this file, run by a shell script as tcpgrace run's
// command; each takes its settings from the environment:
//
//	run-forker   starts a run-worker on the inherited socket (RUN_SETSID=1:
//	             in a session of its own; RUN_CLEAN_ENV=1: without the
//	             LISTEN_* and NOTIFY_SOCKET variables), waits until it
//	             accepts, then
//	             with RUN_MODE=fail exits 3 before READY=1, with
//	             RUN_MODE=serve says READY=1 and waits for SIGTERM (exit 0)
//	run-worker   accepts on fd 3 and answers every connection "worker";
//	             with RUN_WORKER_IGNORE_TERM=1 it ignores SIGTERM
//	run-mainpid  starts a run-daemon and sends MAINPID= naming it (or
//	             RUN_MAINPID if set); with RUN_MODE=exit it exits 0 at
//	             once, with RUN_MODE=stay it says READY=1 too, reaps the
//	             daemon when it dies, and exits 0 on SIGTERM
//	run-daemon   with RUN_READY_AFTER set, says READY=1 that long after
//	             its start; it waits for SIGTERM (exit 0)

// roleApp installs at path a script that runs the test binary as role
// with the settings env ("K=V").
func roleApp(t *testing.T, path, role string, env ...string) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	// The race detector's exit waits 1 s unless told not to.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	script := fmt.Sprintf("#!/bin/sh\nexport %s=%s GORACE='%s' %s\nexec '%s'\n", roleEnv, role, gorace,
		strings.Join(env, " "), self)
	deployAt(t, path, []byte(script))
}

// startTestRole starts the test binary as role, with fds handed on (fd 3
// onwards), in a session of its own if setsid, without the variables of
// tcpgrace run if clean; it shares our stderr.
func startTestRole(role string, setsid, clean bool, files ...*os.File) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	for _, kv := range os.Environ() {
		if !clean || !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, roleEnv+"="+role)
	cmd.Stderr, cmd.ExtraFiles = os.Stderr, files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	return cmd, cmd.Start()
}

// sdNotify sends msg to NOTIFY_SOCKET.
func sdNotify(msg string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

// waitTERM waits for SIGTERM, registered at once; it returns 0.
func waitTERM() func() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	return func() int { <-c; return 0 }
}

func playRunForker() int {
	term := waitTERM()
	up, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "run-forker:", err)
		return 1
	}
	_, err = startTestRole("run-worker", os.Getenv("RUN_SETSID") == "1", os.Getenv("RUN_CLEAN_ENV") == "1", os.NewFile(3, "listener"), w)
	w.Close()
	if err == nil {
		_, err = up.Read(make([]byte, 1)) // the worker accepts
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "run-forker: starting the worker:", err)
		return 1
	}
	if os.Getenv("RUN_MODE") == "fail" {
		fmt.Fprintln(os.Stderr, "run-forker: config check failed, exiting 3")
		return 3
	}
	if err := sdNotify("READY=1\n"); err != nil {
		fmt.Fprintln(os.Stderr, "run-forker:", err)
		return 1
	}
	return term()
}

func playRunWorker() int {
	if os.Getenv("RUN_WORKER_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "run-worker:", err)
		return 1
	}
	up := os.NewFile(4, "up")
	up.Write([]byte{1})
	up.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		c.Write([]byte("worker\n"))
		c.Close()
	}
}

func playRunMainPID() int {
	term := waitTERM()
	daemon, err := startTestRole("run-daemon", false, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "run-mainpid:", err)
		return 1
	}
	main := strconv.Itoa(daemon.Process.Pid)
	if v := os.Getenv("RUN_MAINPID"); v != "" {
		main = v
	}
	if os.Getenv("RUN_MODE") == "exit" {
		if err := sdNotify("MAINPID=" + main + "\n"); err != nil {
			fmt.Fprintln(os.Stderr, "run-mainpid:", err)
			return 1
		}
		return 0
	}
	if err := sdNotify("MAINPID=" + main + "\nREADY=1\n"); err != nil {
		fmt.Fprintln(os.Stderr, "run-mainpid:", err)
		return 1
	}
	go func() {
		err := daemon.Wait()
		fmt.Fprintf(os.Stderr, "run-mainpid: reaped the daemon (%v)\n", err)
	}()
	return term()
}

func playRunDaemon() int {
	term := waitTERM()
	if d, err := time.ParseDuration(os.Getenv("RUN_READY_AFTER")); err == nil {
		time.Sleep(d)
		fmt.Fprintln(os.Stderr, "run-daemon: READY=1, late")
		sdNotify("READY=1\n")
	}
	return term()
}

// alive reports whether process pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}

// waitGone waits up to 5 s until process pid no longer runs.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs 5 s later", what, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rolePIDs are the pids of the processes that logged a start line with
// the given role ("" for every start line: examples and roles).
func (s *supervised) rolePIDs(role string) []int {
	re := regexp.MustCompile(`msg=start pid=(\d+) version=\S+(?: role=(\S+))?`)
	var pids []int
	for _, m := range re.FindAllStringSubmatch(s.logs.String(), -1) {
		if role == "" || m[2] == role {
			pid, _ := strconv.Atoi(m[1])
			pids = append(pids, pid)
		}
	}
	return pids
}

// rolePID waits for the n-th (from 1) start line of role and returns its pid.
func (s *supervised) rolePID(role string, n int) int {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("start line %d of role %s\nlogs:\n%s", n, role, s.logs),
		func() bool { return len(s.rolePIDs(role)) >= n })
	return s.rolePIDs(role)[n-1]
}

// killAllAtCleanup kills, when the test ends, every process that logged
// a start line and every instance, should one have outlived the test.
func (s *supervised) killAllAtCleanup() {
	s.t.Cleanup(func() {
		for _, pid := range s.allPIDs() {
			if alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
				reap(pid, time.Second)
			}
		}
	})
}

// allPIDs are the instances the supervisor started and every process
// that logged a start line.
func (s *supervised) allPIDs() []int {
	pids := s.rolePIDs("")
	for _, m := range instanceStartedRe.FindAllStringSubmatch(s.logs.String(), -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// requireNothingLeft checks, once the supervisor has exited, that no
// process of any instance runs.
func (s *supervised) requireNothingLeft() {
	s.t.Helper()
	for _, pid := range s.allPIDs() {
		assert.False(s.t, alive(pid), "process %d of an instance still runs after the supervisor exited", pid)
	}
}

// answers connects n times to the TCP address and returns the first
// lines the server answered to "ping".
func answers(t *testing.T, addr string, n int) []string {
	t.Helper()
	var got []string
	for range n {
		c, err := net.DialTimeout("tcp", addr, requestBudget)
		require.NoError(t, err)
		c.SetDeadline(time.Now().Add(requestBudget))
		_, err = c.Write([]byte("ping\n"))
		require.NoError(t, err)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		require.NoError(t, err)
		got = append(got, strings.TrimSpace(line))
	}
	return got
}

// TestRunFailedInstanceChildren: an instance that forks a worker onto the
// shared socket and then fails its config check (exit 3 before READY=1):
// tcpgrace upgrade exits 1, the worker is stopped with the failed
// instance (only the serving one answers), and once the supervisor has
// exited on SIGTERM no process of any instance runs. The worker stays in
// the instance's process group, or leaves it for a session of its own
// (and is then known by LISTEN_PID in its environment).
func TestRunFailedInstanceChildren(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	for _, c := range []struct{ name, setsid string }{{"group", "RUN_SETSID=0"}, {"own_session", "RUN_SETSID=1"}} {
		t.Run(c.name, func(t *testing.T) {
			s, app, tcp, ctl := startLineserverRun(t)
			roleApp(t, app, "run-forker", "RUN_MODE=fail", c.setsid)
			r := runTcpgrace(t, "upgrade", "-control", ctl)
			assert.Equal(t, 1, r.code, "the failed upgrade exits 1: %s", r)
			assert.Contains(t, r.stderr, "exited (exit status 3) before it was ready", "and says why")
			worker := s.rolePID("run-worker", 1)
			waitGone(t, worker, "the worker of the failed instance")
			for _, got := range answers(t, tcp, 10) {
				require.Equal(t, "ping", got, "only the serving instance answers")
			}
			require.NoError(t, s.stop())
			s.requireNothingLeft()
		})
	}
}

// startLineserverRun starts tcpgrace run over a copy of lineserver on a
// TCP socket, with a control socket, -stop-timeout 1s and -ready-timeout
// 5s; it returns the copy's path, for the test to replace, the TCP
// address and the control socket's path.
func startLineserverRun(t *testing.T) (s *supervised, app, tcp, ctl string) {
	t.Helper()
	dir := t.TempDir()
	app, tcp, ctl = filepath.Join(dir, "app"), freeAddr(t), filepath.Join(dir, "ctl.sock")
	deployBuild(t, app, lineserverBin)
	s = startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-control", ctl, "-ready-timeout", "5s", "-stop-timeout", "1s"},
		command: []string{app, "-tcp", tcp},
	})
	s.killAllAtCleanup()
	return s, app, tcp, ctl
}

// TestRunCrashedInstanceChildren: the serving instance started a worker
// in a session of its own, without LISTEN_PID, so that only the census
// taken when the instance became ready knows where it came from; the
// instance dies of SIGKILL: the worker is stopped (SIGTERM) while the
// next instance takes over, and SIGTERM to the supervisor leaves nothing
// of any instance running.
func TestRunCrashedInstanceChildren(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	app, tcp := filepath.Join(dir, "app"), freeAddr(t)
	roleApp(t, app, "run-forker", "RUN_MODE=serve", "RUN_SETSID=1", "RUN_CLEAN_ENV=1")
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-ready-timeout", "5s", "-stop-timeout", "1s"},
		command: []string{app},
	})
	s.killAllAtCleanup()
	first, worker := s.serving(), s.rolePID("run-worker", 1)
	require.NoError(t, syscall.Kill(first, syscall.SIGKILL))
	s.waitLog(fmt.Sprintf(`msg="serving instance died" pid=\d+ instance=%d `, first))
	s.waitCount(readyRe, 2)
	waitGone(t, worker, "the worker of the crashed instance, in a session of its own")
	require.NoError(t, s.stop(), "the serving instance exits 0 on SIGTERM")
	s.requireNothingLeft()
}

// TestRunStrayStoppedAtExit: a worker that left the session and the
// environment of an instance that then failed before any census saw the
// worker belongs to no known instance: it runs on (the supervisor says
// so), but the supervisor stops it before it exits.
func TestRunStrayStoppedAtExit(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s, app, _, ctl := startLineserverRun(t)
	roleApp(t, app, "run-forker", "RUN_MODE=fail", "RUN_SETSID=1", "RUN_CLEAN_ENV=1")
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	require.Equal(t, 1, r.code, "the failed upgrade exits 1: %s", r)
	worker := s.rolePID("run-worker", 1)
	require.True(t, alive(worker), "a stray runs on")
	require.NoError(t, s.stop())
	s.requireNothingLeft()
	assert.Regexp(t, fmt.Sprintf(`msg="an orphan of no known instance: it is stopped when the supervisor stops" .* process=%d`, worker),
		s.logs.String(), "the supervisor said so")
}

// TestRunMainPIDNotReadyInTime: the new instance names a daemon it
// started with MAINPID= and exits; the daemon says READY=1 only after
// -ready-timeout. The upgrade fails once, with the reason; the daemon
// is killed at the timeout and never becomes ready; the old instance
// serves on and status says so (not "upgrading").
func TestRunMainPIDNotReadyInTime(t *testing.T) {
	t.Parallel() // it waits out a timeout; nothing it measures is a latency
	dir := t.TempDir()
	app, tcp, ctl := filepath.Join(dir, "app"), freeAddr(t), filepath.Join(dir, "ctl.sock")
	deployBuild(t, app, lineserverBin)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-control", ctl, "-ready-timeout", "2s"},
		command: []string{app, "-tcp", tcp},
	})
	s.killAllAtCleanup()
	serving := s.serving()
	roleApp(t, app, "run-mainpid", "RUN_MODE=exit", "RUN_READY_AFTER=2500ms")
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	assert.Equal(t, 1, r.code, "the failed upgrade exits 1: %s", r)
	assert.Contains(t, r.stderr, "not ready within -ready-timeout 2s", "and says why")
	m := regexp.MustCompile(`msg="instance has a new main process" .* generation=2 main=(\d+)`).FindStringSubmatch(s.logs.String())
	require.NotNil(t, m, "the instance named its daemon with MAINPID=\nlogs:\n%s", s.logs)
	daemon, _ := strconv.Atoi(m[1])
	waitGone(t, daemon, "the daemon not ready in time")
	st := ctlStatus(t, ctl)
	assert.Equal(t, "serving", st.State, "status after the failed upgrade: %+v", st)
	assert.Equal(t, 1, st.Generation, "the first generation serves on: %+v", st)
	require.NotNil(t, st.Supervisor)
	for _, in := range st.Supervisor.Instances {
		assert.False(t, in.State == "starting", "no instance is starting: %+v", in)
		assert.False(t, in.State == "serving" && in.PID != serving, "the old instance serves: %+v", in)
	}
	assert.Equal(t, 1, s.count(upgradeFailedRe), "the upgrade failed once\nlogs:\n%s", s.logs)
	assert.NotContains(t, s.logs.String(), "run-daemon: READY=1, late", "the daemon was killed before it said READY=1")
	assert.Equal(t, 1, s.count(readyRe), "no instance became ready after the first")
	require.NoError(t, s.stop())
	s.requireNothingLeft()
}

// TestRunMainPIDOfAnotherInstance: a new instance that names the
// serving instance with MAINPID= is not believed: the MAINPID= is
// ignored with a warning, and the new instance stays its own main
// process.
func TestRunMainPIDOfAnotherInstance(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	app, tcp := filepath.Join(dir, "app"), freeAddr(t)
	deployBuild(t, app, lineserverBin)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-ready-timeout", "5s", "-stop-timeout", "1s"},
		command: []string{app, "-tcp", tcp},
	})
	s.killAllAtCleanup()
	first := s.serving()
	roleApp(t, app, "run-mainpid", "RUN_MODE=stay", fmt.Sprintf("RUN_MAINPID=%d", first))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
	s.waitCount(readyRe, 2)
	second := s.serving()
	require.NotEqual(t, first, second)
	assert.NotRegexp(t, `msg="instance has a new main process"`, s.logs.String(), "the MAINPID= was believed")
	s.waitLog(fmt.Sprintf(`msg="notify socket: MAINPID names no process of the instance, ignored" .* mainpid=%d`, first))
	s.waitLog(fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d .*status="exit status 0"`, first))
	require.NoError(t, s.stop())
	s.requireNothingLeft()
}

// TestRunMainPIDReapedByItsParent: the serving instance names a daemon
// it started (and keeps as its child) with MAINPID=; the daemon dies and
// the instance reaps it. The supervisor sees the death (a pidfd), counts
// it as a crash, stops what is left of the instance and starts another.
func TestRunMainPIDReapedByItsParent(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	roleApp(t, app, "run-mainpid", "RUN_MODE=stay")
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://127.0.0.1:0", "-ready-timeout", "5s", "-stop-timeout", "1s"},
		command: []string{app},
	})
	s.killAllAtCleanup()
	daemon := s.rolePID("run-daemon", 1)
	s.waitLog(fmt.Sprintf(`msg="instance has a new main process" .* main=%d`, daemon))
	first := s.rolePID("run-mainpid", 1)
	require.NoError(t, syscall.Kill(daemon, syscall.SIGKILL))
	s.waitLog(fmt.Sprintf(`msg="serving instance died" pid=\d+ instance=%d .*status="exited, reaped by its own parent: status unknown"`, daemon))
	s.waitCount(readyRe, 2)
	waitGone(t, first, "the instance's first process, once its main process died")
	require.NoError(t, s.stop())
	s.requireNothingLeft()
}

// TestRunSelfUpgradeKeepsLeftovers: what a crashed instance left (a
// worker in a session of its own, without LISTEN_PID, that ignores
// SIGTERM) is still known after a self-upgrade, which hands the ended
// instances and the last census to the next image: the new image kills
// the worker at -stop-timeout while the supervisor runs on, where it used
// to count it as of no known instance and leave it until the final stop.
func TestRunSelfUpgradeKeepsLeftovers(t *testing.T) {
	t.Parallel() // it waits out a timeout; nothing it measures is a latency
	dir := t.TempDir()
	app, tcp := filepath.Join(dir, "app"), freeAddr(t)
	roleApp(t, app, "run-forker", "RUN_MODE=serve", "RUN_SETSID=1", "RUN_CLEAN_ENV=1", "RUN_WORKER_IGNORE_TERM=1")
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-ready-timeout", "5s", "-stop-timeout", "2s"},
		command: []string{app},
	})
	s.killAllAtCleanup()
	first, worker := s.serving(), s.rolePID("run-worker", 1)
	require.NoError(t, syscall.Kill(first, syscall.SIGKILL))
	s.waitLog(`msg="stopping what is left of an ended instance" .*signal=SIGTERM`)
	s.waitCount(readyRe, 2)
	require.True(t, alive(worker), "the worker ignores SIGTERM")

	deployBuild(t, s.bin, tcpgraceBuild(versions[1]))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2))
	s.waitLog(`msg="supervisor upgraded in place"`)
	waitGone(t, worker, "the worker of the crashed instance, across the self-upgrade")
	assert.NotContains(t, s.logs.String(), "an orphan of no known instance", "the new image knows where it came from")
	select {
	case err := <-s.done:
		t.Fatalf("the supervisor exited (%v): the worker was to be stopped while it runs", err)
	default:
	}
	require.NoError(t, s.stop())
	s.requireNothingLeft()
}
