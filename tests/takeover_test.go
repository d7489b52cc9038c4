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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// takeOver starts a successor of s's serving generation on its own, the
// way a blue/green deploy does: bin with args plus "-pidfile" and
// "-takeover ctl", a child of the test (not of any generation) in a
// session of its own, logging to a file of s's logs. It returns the
// process.
func (s *server) takeOver(bin, ctl string, args ...string) *exec.Cmd {
	s.t.Helper()
	argv := append([]string{"-pidfile", s.pidFile}, args...)
	cmd := exec.Command(bin, append(argv, "-takeover", ctl)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logs, err := os.Create(s.logs.add(filepath.Join(s.dir, fmt.Sprintf("taker-%d.log", len(s.logs.more)+1))))
	require.NoError(s.t, err)
	defer logs.Close()
	cmd.Stderr = logs
	require.NoError(s.t, startRetryingBusy(cmd), "starting the taker %s", bin)
	s.mu.Lock()
	s.pids = append(s.pids, cmd.Process.Pid)
	s.mu.Unlock()
	return cmd
}

// takeOverNext deploys the next build beside s's binary, starts it as a
// taker (see takeOver) and waits until it serves and the old generation
// has exited 0. It returns the new pid.
func (s *server) takeOverNext(ctl string, args ...string) int {
	s.t.Helper()
	old := s.pid()
	version, build := s.nextBuild(s.src)
	exe := filepath.Join(s.dir, "next-"+version+"-"+strconv.Itoa(old))
	require.NoError(s.t, copyExecutable(exe, build, 0o755))
	cmd := s.takeOver(exe, ctl, args...)
	pid := cmd.Process.Pid
	s.waitPID(pid)
	s.waitReadyLog(pid)
	s.upgraded(pid, version, exe)
	st := procStat(s.t, pid)
	require.NotEqual(s.t, old, st.ppid, "the taker is no child of the old generation")
	require.Equal(s.t, pid, st.session, "the taker leads a session of its own")
	s.waitExit(old, 0)
	return pid
}

// procStatus is what /proc/PID/stat says of a process's family.
type procStatus struct{ ppid, session int }

func procStat(t *testing.T, pid int) procStatus {
	t.Helper()
	b := readFile(t, fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ppid, _ := strconv.Atoi(f[1])
	sid, _ := strconv.Atoi(f[3])
	return procStatus{ppid: ppid, session: sid}
}

// TestTakeoverUnderLoad: lineserver on TCP and a Unix socket under load;
// three successors started on their own (not children, sessions of
// their own, another build each time) take every socket over in turn,
// each old one exits 0, and no request fails. The taker's -control is the
// same path: the control socket goes with the others, so each taker is
// asked by the next one at the same path.
func TestTakeoverUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ctl, sock := filepath.Join(dir, "ctl"), filepath.Join(dir, "s.sock")
	args := []string{"-tcp", "127.0.0.1:0", "-unix", sock, "-control", ctl}
	s := startServer(t, nil, args...)
	tcp := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 4, 200000)
	defer l.halt()
	l.waitRequests(t, 200)
	for i := 0; i < 3; i++ {
		before := l.ok.Load()
		pid := s.takeOverNext(ctl, args...)
		l.waitRequests(t, before+100)
		require.Equal(t, pid, s.pid())
	}
	l.stopLoad(t)
	require.NoError(t, echoOnce("tcp", tcp, "after"), "the last taker serves")
	s.stop()
}

// TestTakeoverTakerFails: a taker that exits 3 right after it took the
// sockets, and one killed (SIGKILL) before it is ready, leave the old
// generation serving with the fds it had; a third takes over.
func TestTakeoverTakerFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctl, sock := filepath.Join(dir, "ctl"), filepath.Join(dir, "s.sock")
	args := []string{"-tcp", "127.0.0.1:0", "-unix", sock, "-control", ctl}
	s := startServer(t, nil, args...)
	tcp := s.addr("tcp:127.0.0.1:0")
	self, err := os.Executable()
	require.NoError(t, err)
	old := s.pid()
	before := fdCount(t, old)
	for i, role := range []string{"exit3", "stall"} {
		cmd := exec.Command(self, "-takeover", ctl, "-tcp", "127.0.0.1:0", "-control", ctl)
		cmd.Env = append(os.Environ(), serverRoleEnv+"=take-"+role)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := os.Create(filepath.Join(dir, role+".log"))
		require.NoError(t, err)
		cmd.Stderr = out
		require.NoError(t, cmd.Start())
		if role == "stall" {
			waitFor(t, "the stalling taker to hold the sockets", func() bool {
				b, _ := os.ReadFile(out.Name())
				return strings.Contains(string(b), `msg="took over; stalling"`)
			})
			require.NoError(t, cmd.Process.Kill())
		}
		err = cmd.Wait()
		out.Close()
		if role == "exit3" {
			require.ErrorContains(t, err, "exit status 3")
		}
		waitFor(t, "the old generation's failed upgrade", func() bool {
			return strings.Count(s.logs.String(), `msg="upgrade failed"`) == i+1
		})
		assert.Contains(t, s.logs.String(), "it exited before it was ready: its connection to the control socket closed")
		require.NoError(t, echoOnce("tcp", tcp, "still "+role), "the old generation serves on after the %s taker", role)
		require.NoError(t, echoOnce("unix", sock, "still "+role), "on its Unix socket too: the taker left the file")
		require.Equal(t, old, s.pid())
		waitFor(t, fmt.Sprintf("generation %d's fds back at %d", old, before), func() bool { return fdCount(t, old) == before })
	}
	s.takeOverNext(ctl, args...)
	s.stop()
}

// TestTakeoverTakerLate: a taker that becomes ready only after the old
// generation's ready timeout passed is told the old one gave up: its
// Ready fails, it does not serve (it exits 4), and the old one serves on.
func TestTakeoverTakerLate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl, "-ready-timeout", "300ms")
	tcp := s.addr("tcp:127.0.0.1:0")
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, "-takeover", ctl, "-control", ctl, "-reload-delay", "1s")
	cmd.Env = append(os.Environ(), serverRoleEnv+"=take-late")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	require.ErrorContains(t, err, "exit status 4", "%s", out)
	assert.Contains(t, string(out), "the giving generation gave up")
	assert.Contains(t, string(out), "no word within 300ms")
	require.NoError(t, echoOnce("tcp", tcp, "still"), "the old generation serves on")
	assert.Contains(t, s.logs.String(), `msg="upgrade failed"`)
	s.stop()
}

// TestTakeoverOtherUID: a taker of another uid is refused by the old
// generation's peer check (the control socket's file made 0666 for the
// test, so that the connection gets that far), exits 1 with the reason,
// and the old generation serves on.
func TestTakeoverOtherUID(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the taker runs as uid 65534")
	}
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	tcp := s.addr("tcp:127.0.0.1:0")
	require.NoError(t, os.Chmod(ctl, 0o666))
	bin := filepath.Join(t.TempDir(), "lineserver")
	require.NoError(t, copyExecutable(bin, lineserverBin, 0o755))
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	cmd := exec.Command(bin, "-tcp", "127.0.0.1:0", "-takeover", ctl)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.ErrorContains(t, err, "exit status 1", "%s", out)
	assert.Contains(t, string(out), "answered denied")
	assert.Contains(t, string(out), "uid 65534 may not ask")
	require.NoError(t, echoOnce("tcp", tcp, "still"))
	s.stop()
}

// TestTakeover256Listeners: 256 listeners (128 TCP, 128 Unix) are taken
// over; the taker answers on every one and the old generation exits 0.
func TestTakeover256Listeners(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	args := []string{"-control", ctl}
	for i := 0; i < 128; i++ {
		args = append(args, "-tcp", fmt.Sprintf("127.0.0.1:%d", 0), "-unix", filepath.Join(dir, fmt.Sprintf("%d.sock", i)))
	}
	args = uniqueTCP(t, args)
	s := startServer(t, nil, args...)
	pid := s.takeOverNext(ctl, args...)
	for i := 0; i < len(args); i += 2 {
		network := strings.TrimPrefix(args[i], "-")
		if network != "tcp" && network != "unix" {
			continue
		}
		require.NoError(t, echoOnce(network, args[i+1], "hi"), "%s %s after the takeover", network, args[i+1])
	}
	m := regexp.MustCompile(`msg="takeover: sockets handed to the taker" .* sockets=(\d+)`).FindStringSubmatch(s.logs.String())
	require.NotNil(t, m, "the old generation's takeover line")
	assert.Equal(t, "257", m[1], "the old generation handed 256 listeners and its control socket")
	require.Equal(t, pid, s.pid())
	s.stop()
}

// uniqueTCP replaces each "-tcp 127.0.0.1:0" in args with a port of its
// own, bound here until all are picked and then released: lineserver
// names a listener by its address, and 128 listeners of one name would
// be one. The ports come from below the ephemeral range (lowListener),
// where a client connection of a test running beside cannot take one
// before the server binds it (a clean-clone run saw that).
func uniqueTCP(t *testing.T, args []string) []string {
	t.Helper()
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-tcp" {
			ln := lowListener(t)
			defer ln.Close()
			out[i+1] = ln.Addr().String()
		}
	}
	return out
}
