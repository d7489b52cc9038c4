package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The supervisor, `tcpgrace run` (issue #14), end to end: the tcpgrace
// command over real instances of the Python example and of lineserver,
// under load, signalled as an operator or a container runtime would.

// readyRe is the supervisor's line for an instance that became ready:
// the supervisor's own pid, the instance's, its generation.
var readyRe = regexp.MustCompile(`msg="instance ready" pid=(\d+) instance=(\d+) generation=(\d+)`)

// instanceStartedRe is the supervisor's line for a started instance.
var instanceStartedRe = regexp.MustCompile(`msg="instance started" pid=\d+ instance=(\d+) `)

// tcpgraceBuild is the tcpgrace command built in version v.
func tcpgraceBuild(v string) string { return filepath.Join(binDir, v, "tcpgrace") }

// pythonLineserver is the command line of the Python example, with the
// interpreter itself rather than a wrapper found in PATH (pyenv's shims
// are shell scripts that would double its start-up time).
func pythonLineserver(t *testing.T) []string {
	t.Helper()
	python := needPython(t)
	script, err := filepath.Abs("../examples/python/lineserver.py")
	require.NoError(t, err)
	return []string{python, script}
}

// runSpec says how to start a supervisor.
type runSpec struct {
	flags   []string // run's flags; -pidfile is added
	command []string // CMD and ARGS
	unshare bool     // as PID 1 of a new PID namespace
	env     []string // added to our environment
	noWait  bool     // do not wait for the first instance to be ready
}

// supervised is a running `tcpgrace run` and the instances it starts.
type supervised struct {
	t       *testing.T
	cmd     *exec.Cmd
	done    chan error // cmd.Wait's result
	pid     int        // the supervisor, as seen from here
	selfPID int        // the supervisor as it sees itself: 1 in a namespace
	ns      bool       // PID 1 of a PID namespace of its own
	dir     string
	bin     string // the supervisor's binary, a copy that a test may replace
	pidFile string
	logs    *logFile
}

// startRun starts a copy of the first version of tcpgrace as
// "tcpgrace run -pidfile PATH FLAGS -- COMMAND" and waits until an
// instance is ready.
func startRun(t *testing.T, spec runSpec) *supervised {
	t.Helper()
	dir := t.TempDir()
	s := &supervised{t: t, dir: dir, ns: spec.unshare, bin: filepath.Join(dir, "tcpgrace"), pidFile: filepath.Join(dir, "tcpgrace.pid"),
		logs: &logFile{path: filepath.Join(dir, "stderr.log")}}
	deployBuild(t, s.bin, tcpgraceBuild(versions[0]))
	stderr, err := os.Create(s.logs.path)
	require.NoError(t, err)
	defer stderr.Close()
	args := append([]string{s.bin, "run", "-pidfile", s.pidFile}, spec.flags...)
	args = append(append(args, "--"), spec.command...)
	if spec.unshare {
		unshare, err := exec.LookPath("unshare")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and unshare(1) (util-linux): a new PID namespace")
		}
		args = append([]string{unshare, "--pid", "--fork", "--mount-proc"}, args...)
	}
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stderr = stderr
	s.cmd.Env = append(os.Environ(), spec.env...)
	require.NoError(t, s.cmd.Start())
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(s.cleanup)
	s.pid, s.selfPID = s.cmd.Process.Pid, s.cmd.Process.Pid
	if spec.unshare {
		s.waitLog(`msg="supervisor start"`)
		s.pid, s.selfPID = namespaceInit(t, s.cmd.Process.Pid), 1
	}
	if spec.noWait {
		return s
	}
	s.waitCount(readyRe, 1)
	require.Equal(t, strconv.Itoa(s.selfPID), strings.TrimSpace(string(readFile(t, s.pidFile))),
		"the pid file names the supervisor")
	return s
}

// deployAt puts data at path as a deploy does: a new file renamed over
// the old one.
func deployAt(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, writeExecutable(path+".new", data, 0o755))
	require.NoError(t, os.Rename(path+".new", path))
}

// deployBuild puts a copy of the file at src at path as deployAt does,
// copied by the kernel (see deployCopy).
func deployBuild(t *testing.T, path, src string) {
	t.Helper()
	require.NoError(t, copyExecutable(path+".new", src, 0o755))
	require.NoError(t, os.Rename(path+".new", path))
}

// cleanup kills whatever a failed test left: the supervisor, and the
// instances it started that still run (their process groups), now its
// children or, after its death, ours. In a namespace, killing its PID 1
// kills every process in it.
func (s *supervised) cleanup() {
	var left []int
	if !s.ns {
		for _, m := range instanceStartedRe.FindAllStringSubmatch(s.logs.String(), -1) {
			if pid, _ := strconv.Atoi(m[1]); pid > 0 && (parentPID(pid) == s.pid || parentPID(pid) == os.Getpid()) {
				left = append(left, pid)
			}
		}
	}
	if s.ns && s.pid != s.cmd.Process.Pid && parentPID(s.pid) == s.cmd.Process.Pid {
		// unshare does not pass its SIGKILL on: PID 1 of the namespace,
		// left running, would keep the supervisor and its instance alive.
		syscall.Kill(s.pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
	<-s.done
	for _, pid := range left {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
		reap(pid, time.Second)
	}
	if s.t.Failed() {
		s.t.Logf("supervisor logs:\n%s", s.logs)
	}
}

// count is how often re matches the logs.
func (s *supervised) count(re *regexp.Regexp) int {
	return len(re.FindAllString(s.logs.String(), -1))
}

// waitCount waits until re matches the logs n times.
func (s *supervised) waitCount(re *regexp.Regexp, n int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("%d lines matching %s\nlogs:\n%s", n, re, s.logs), func() bool { return s.count(re) >= n })
}

// waitLog waits for a line matching the regular expression expr.
func (s *supervised) waitLog(expr string) {
	s.t.Helper()
	s.waitCount(regexp.MustCompile(expr), 1)
}

// serving is the pid (as the supervisor sees it) of the instance that
// became ready last.
func (s *supervised) serving() int {
	m := readyRe.FindAllStringSubmatch(s.logs.String(), -1)
	if len(m) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(m[len(m)-1][2])
	return pid
}

// hostPID is the pid, as seen from here, of the supervisor's child that
// it knows as pid.
func (s *supervised) hostPID(pid int) int {
	s.t.Helper()
	if !s.ns {
		return pid
	}
	for _, child := range s.children() {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(pid) {
				return child
			}
		}
	}
	s.t.Fatalf("no child of the supervisor is pid %d in its namespace", pid)
	return 0
}

// children lists the supervisor's children (of every thread).
func (s *supervised) children() []int {
	var pids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", s.pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			pids = append(pids, pid)
		}
	}
	return pids
}

// upgrade sends SIGUSR1 and waits until a new instance is ready and the
// old one has drained and exited 0. It returns the new instance's pid.
func (s *supervised) upgrade() int {
	s.t.Helper()
	old, n := s.serving(), s.count(readyRe)
	require.NoError(s.t, syscall.Kill(s.pid, syscall.SIGUSR1))
	s.waitCount(readyRe, n+1)
	s.waitLog(fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d generation=\d+ phase=draining status="exit status 0"`, old))
	pid := s.serving()
	require.NotEqual(s.t, old, pid, "a new instance serves")
	return pid
}

// stop sends SIGTERM and waits for the supervisor to exit; it returns
// the exit error (nil for status 0).
func (s *supervised) stop() error {
	s.t.Helper()
	require.NoError(s.t, syscall.Kill(s.pid, syscall.SIGTERM))
	return s.wait()
}

// wait waits for the supervisor to exit and returns the exit error.
func (s *supervised) wait() error {
	s.t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for cleanup
		return err
	case <-time.After(waitTimeout):
		s.t.Fatalf("the supervisor did not exit\nlogs:\n%s", s.logs)
		return nil
	}
}

// checkStablePID checks that every line the supervisor logged names the
// same pid, its own.
func (s *supervised) checkStablePID() {
	s.t.Helper()
	re := regexp.MustCompile(`msg="(?:supervisor|instance)[^"]*" pid=(\d+)`)
	lines := re.FindAllStringSubmatch(s.logs.String(), -1)
	require.NotEmpty(s.t, lines)
	for _, m := range lines {
		require.Equal(s.t, strconv.Itoa(s.selfPID), m[1], "every supervisor line comes from the same pid: %s", m[0])
	}
}

// listenAddr is the address the supervisor bound for -listen name.
func (s *supervised) listenAddr(name string) string {
	s.t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`msg=listening pid=%d .*listener=%s .*addr=(\S+)`, s.selfPID, regexp.QuoteMeta(name)))
	m := re.FindStringSubmatch(s.logs.String())
	require.NotNil(s.t, m, "the supervisor logged its %s socket\nlogs:\n%s", name, s.logs)
	return m[1]
}
