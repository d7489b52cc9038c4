package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// waitTimeout bounds every wait for a process to do something.
const waitTimeout = 15 * time.Second

// server is a running example server and all its generations.
type server struct {
	t       *testing.T
	dir     string
	src     string // the built example it deploys
	bin     string // the path it was started from; replaced to deploy
	pidFile string
	first   *exec.Cmd
	logs    *logFile
	mu      sync.Mutex
	pids    []int // every generation seen, oldest first
}

// logFile is the stderr of every generation: a real file, since a pipe
// would stay open in the generations that outlive the first.
type logFile struct{ path string }

func (l *logFile) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b)
}

// startServer starts lineserver; see startExample.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	return startExample(t, lineserverBin, env, args...)
}

// startExample copies the built example src into a temp dir and starts it
// with args plus "-pidfile PATH" (every example takes it), with env added
// to ours, waiting until it is ready (its pid file names it).
func startExample(t *testing.T, src string, env []string, args ...string) *server {
	t.Helper()
	return launch(t, src, launchOpts{env: env}, args...)
}

// launchOpts are the less common ways to start a server.
type launchOpts struct {
	env     []string   // added to our environment
	shell   string     // if set, run through sh -c with this prefix, e.g. "ulimit -n 30;"
	pidFile string     // if set, use this pid file instead of one in the temp dir
	noWait  bool       // do not wait for the pid file
	extra   []*os.File // passed as fds 3 and up, as systemd passes sockets
}

func launch(t *testing.T, src string, o launchOpts, args ...string) *server {
	t.Helper()
	dir := t.TempDir()
	name := filepath.Base(src)
	s := &server{t: t, dir: dir, src: src, bin: filepath.Join(dir, name), pidFile: filepath.Join(dir, name+".pid"), logs: &logFile{filepath.Join(dir, "stderr.log")}}
	if o.pidFile != "" {
		s.pidFile = o.pidFile
	}
	s.deploy(src)
	argv := append([]string{s.bin, "-pidfile", s.pidFile}, args...)
	if o.shell != "" {
		// exec keeps the pid and the path the server was started from.
		argv = append([]string{"/bin/sh", "-c", o.shell + ` exec "$0" "$@"`}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.ExtraFiles = o.extra
	stderr, err := os.Create(s.logs.path)
	require.NoError(t, err)
	defer stderr.Close()
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start(), "starting %s", name)
	s.first = cmd
	s.pids = []int{cmd.Process.Pid}
	t.Cleanup(s.kill)
	if !o.noWait {
		s.waitPID(cmd.Process.Pid)
	}
	return s
}

// deploy puts src at the server's path the way a deploy does: a new file
// renamed over the old one.
func (s *server) deploy(src string) {
	s.t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(s.t, err)
	s.deployBytes(data, 0o755)
}

func (s *server) deployBytes(data []byte, mode os.FileMode) {
	s.t.Helper()
	tmp := s.bin + ".new"
	require.NoError(s.t, os.WriteFile(tmp, data, mode))
	require.NoError(s.t, os.Chmod(tmp, mode))
	require.NoError(s.t, os.Rename(tmp, s.bin))
}

// pid is the pid the pid file names now (0 if none).
func (s *server) pid() int {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitPID waits until the pid file names pid.
func (s *server) waitPID(pid int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("pid file to name %d\nlogs:\n%s", pid, s.logs), func() bool { return s.pid() == pid })
}

// addr returns the concrete address of the listener registered as name
// (e.g. "tcp:127.0.0.1:0"), read from the first generation's log.
func (s *server) addr(name string) string {
	s.t.Helper()
	re := regexp.MustCompile(`msg=listening .*listener=` + regexp.QuoteMeta(name) + ` .*addr=(\S+)`)
	var addr string
	waitFor(s.t, "listening log line for "+name, func() bool {
		if m := re.FindStringSubmatch(s.logs.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

// upgrade sends SIGUSR1 and waits until a new generation is ready and the
// old one has exited with status 0. It returns the new pid.
func (s *server) upgrade() int {
	s.t.Helper()
	old := s.pid()
	pid := s.startUpgrade()
	s.waitExit(old, 0)
	return pid
}

// startUpgrade sends SIGUSR1 and waits until a new generation is ready,
// leaving the old one to drain. It returns the new pid.
func (s *server) startUpgrade() int {
	s.t.Helper()
	old := s.pid()
	require.NoError(s.t, syscall.Kill(old, syscall.SIGUSR1), "signalling %d", old)
	var pid int
	waitFor(s.t, fmt.Sprintf("a new generation after %d\nlogs:\n%s", old, s.logs), func() bool {
		pid = s.pid()
		return pid != 0 && pid != old
	})
	s.mu.Lock()
	s.pids = append(s.pids, pid)
	s.mu.Unlock()
	s.waitReadyLog(pid)
	return pid
}

// waitReadyLog waits for generation pid's "ready" log line: Ready writes
// the pid file first and logs after it has told its parent and closed the
// readiness pipe, so fd counts taken after it are settled.
func (s *server) waitReadyLog(pid int) {
	s.t.Helper()
	line := fmt.Sprintf("msg=ready pid=%d ", pid)
	waitFor(s.t, line, func() bool { return strings.Contains(s.logs.String(), line) })
}

// waitExit reaps pid (our child, or an orphan re-parented to us) and
// checks its exit status.
func (s *server) waitExit(pid, status int) {
	s.t.Helper()
	if s.first != nil && pid == s.first.Process.Pid {
		done := make(chan error, 1)
		go func() { done <- s.first.Wait() }()
		select {
		case err := <-done:
			require.NoError(s.t, err, "first generation %d should exit 0\nlogs:\n%s", pid, s.logs)
		case <-time.After(waitTimeout):
			s.t.Fatalf("first generation %d did not exit\nlogs:\n%s", pid, s.logs)
		}
		return
	}
	ws, err := reap(pid, waitTimeout)
	if errors.Is(err, unix.ECHILD) {
		// Reaped by its parent, an older generation still draining: the
		// status is its parent's to read; that it is gone is ours.
		waitFor(s.t, fmt.Sprintf("generation %d to exit", pid), func() bool { return processAlive(pid) != nil })
		return
	}
	require.NoError(s.t, err, "reaping generation %d\nlogs:\n%s", pid, s.logs)
	require.True(s.t, ws.Exited(), "generation %d should exit, not %v", pid, ws)
	require.Equal(s.t, status, ws.ExitStatus(), "exit status of generation %d\nlogs:\n%s", pid, s.logs)
}

// stop sends SIGTERM to the serving generation and waits for its exit.
func (s *server) stop() {
	s.t.Helper()
	pid := s.pid()
	require.NoError(s.t, syscall.Kill(pid, syscall.SIGTERM))
	s.waitExit(pid, 0)
}

// kill ends every generation still alive; it runs at cleanup.
func (s *server) kill() {
	s.mu.Lock()
	pids := append([]int(nil), s.pids...)
	s.mu.Unlock()
	for _, pid := range pids {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			reap(pid, time.Second)
		}
	}
	if s.t.Failed() {
		s.t.Logf("server logs:\n%s", s.logs)
	}
}

// reap waits for pid to exit, up to timeout. A pid that another process
// reaped (ECHILD) is waited for until it is gone from /proc.
func reap(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	type result struct {
		ws  unix.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		done <- result{ws, err}
	}()
	select {
	case r := <-done:
		return r.ws, r.err
	case <-time.After(timeout):
		return 0, fmt.Errorf("process %d still running after %v", pid, timeout)
	}
}

// waitFor polls cond every few milliseconds up to waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fdCount is the number of open fds of process pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(entries)
}

// fdKinds lists what the open fds of process pid are (a file's path, or
// "socket", "pipe", "anon_inode"), sorted, without fd or inode numbers, so
// that two processes compare equal.
func fdKinds(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var kinds []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind, _, _ := strings.Cut(target, ":[")
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	return kinds
}

// idleFDKinds waits until process pid holds no sockets but its listeners
// (connections of a finished load may take a moment to close), then
// returns fdKinds.
func idleFDKinds(t *testing.T, pid, listeners int) []string {
	t.Helper()
	var kinds []string
	waitFor(t, fmt.Sprintf("process %d to hold only its %d listening sockets", pid, listeners), func() bool {
		kinds = fdKinds(t, pid)
		return slices.Index(kinds, "socket") >= 0 && len(slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k != "socket" })) == listeners
	})
	return kinds
}

// echoOnce connects, sends one line and checks the echo.
func echoOnce(network, addr, line string) error {
	c, err := dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if got != line+"\n" {
		return fmt.Errorf("sent %q, got %q", line, got)
	}
	return nil
}

// failUpgrade sends SIGUSR1 and waits for the serving generation to log a
// failed upgrade whose error contains reason; the generation must stay.
func (s *server) failUpgrade(reason string) {
	s.t.Helper()
	pid := s.pid()
	before := strings.Count(s.logs.String(), `msg="upgrade failed"`)
	require.NoError(s.t, syscall.Kill(pid, syscall.SIGUSR1))
	var line string
	waitFor(s.t, "a logged upgrade failure\nlogs:\n"+s.logs.String(), func() bool {
		logs := s.logs.String()
		if strings.Count(logs, `msg="upgrade failed"`) == before {
			return false
		}
		i := strings.LastIndex(logs, `msg="upgrade failed"`)
		line, _, _ = strings.Cut(logs[i:], "\n")
		return true
	})
	require.Contains(s.t, line, reason, "the upgrade error should say why")
	require.Equal(s.t, pid, s.pid(), "a failed upgrade leaves the pid file alone")
	require.NoError(s.t, syscall.Kill(pid, 0), "the serving generation is still alive")
}

// processAlive is nil if pid runs (and is not a zombie).
func processAlive(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
		return fmt.Errorf("process %d is a zombie", pid)
	}
	return nil
}

// deployAs copies src to dst (beside the server's binary, say).
func (s *server) deployAs(src, dst string) {
	s.t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(s.t, err)
	require.NoError(s.t, os.WriteFile(dst, data, 0o755))
}

// liveGenerations counts the generations still running.
func (s *server) liveGenerations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, pid := range s.pids {
		if processAlive(pid) == nil {
			n++
		}
	}
	return n
}
