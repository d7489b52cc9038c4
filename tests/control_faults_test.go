package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// Issue #18's faults of the control socket and the tcpgrace command, each
// tried the way an unlucky operator or a hostile user would.

func init() { ownRoles["forge-control"] = playForgeControl }

// forgedPID is the pid every reply of the forging server names.
const forgedPID = 4242

// playForgeControl is the role forge-control: a server of another user
// that bound the control path (os.Args[1]) first and answers every
// request with a forged success.
func playForgeControl() int {
	ln, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "role:", err)
		return 1
	}
	forged := control.Reply{V: control.Version, OK: true,
		Upgrade: &control.Upgraded{PID: forgedPID, Generation: 99, OldPID: 1},
		Status:  &control.Status{PID: forgedPID, Generation: 99, State: "forged"},
		Stop:    &control.Stopping{PID: forgedPID}}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		c.SetDeadline(time.Now().Add(time.Second))
		bufio.NewReader(c).ReadString('\n')
		control.WriteReply(c, &forged)
		c.Close()
	}
}

// rawRequest sends line on the control socket at path and returns the
// reply.
func rawRequest(t *testing.T, path, line string) *control.Reply {
	t.Helper()
	c, err := net.DialTimeout("unix", path, requestBudget)
	require.NoError(t, err, "dialling %s", path)
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	_, err = c.Write([]byte(line + "\n"))
	require.NoError(t, err)
	rep, err := control.ReadReply(c)
	require.NoError(t, err, "a reply to %s", line)
	return rep
}

// goneRequest sends line on the control socket at path and closes the
// connection at once, as a client that gave up does.
func goneRequest(t *testing.T, path, line string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, requestBudget)
	require.NoError(t, err, "dialling %s", path)
	_, err = c.Write([]byte(line + "\n"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
}

// stopProcess sends SIGSTOP to pid and, at cleanup, SIGCONT.
func stopProcess(t *testing.T, pid int) {
	t.Helper()
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
}

// startCLI runs the tcpgrace command in the background; its result
// arrives on the channel.
func startCLI(t *testing.T, args ...string) <-chan cliResult {
	done := make(chan cliResult, 1)
	go func() { done <- runTcpgrace(t, args...) }()
	return done
}

// waitNextGeneration waits until a generation after old is ready and
// returns its pid.
func (s *server) waitNextGeneration(old int) int {
	s.t.Helper()
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

// TestControlStopDuringReadyGrace pins issue #18's "tcpgrace stop during
// -ready-grace exits 0 and nothing stops": the stop reached the
// generation that was watching its successor through a 30 s grace, which
// then left, and the new generation served on. Now a stop stops the
// service: the hand-off stands, the old generation hands the stop on to
// the new one, and the reply names the new one, which drains and exits.
// The new generation is held (SIGSTOP) while the stop arrives, so that
// the old one takes it.
func TestControlStopDuringReadyGrace(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl, "-ready-grace", "30s")
	gen1 := s.pid()
	version := s.deployNext()
	upgrade := startCLI(t, "upgrade", "-control", ctl)
	gen2 := s.waitNextGeneration(gen1)
	s.upgraded(gen2, version, s.bin)

	stopProcess(t, gen2)
	stop := startCLI(t, "stop", "-control", ctl)
	waitFor(t, "the first generation to take the stop", func() bool {
		return strings.Contains(s.logs.String(), fmt.Sprintf(`msg="control request" pid=%d generation=1 cmd=stop`, gen1))
	})
	require.NoError(t, syscall.Kill(gen2, syscall.SIGCONT))
	r := <-stop
	require.Equal(t, 0, r.code, "tcpgrace stop: %s", r)
	var st control.Stopping
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), "%s", r)
	require.Equal(t, gen2, st.PID, "the reply names the new generation, which stops too: %s", r)
	s.waitExit(gen1, 0)
	s.waitExit(gen2, 0)
	up := <-upgrade
	assert.Equal(t, 0, up.code, "the upgrade stood: the new generation served until the stop: %s", up)
	assert.NoFileExists(t, ctl, "nothing serves the control socket any more")
}

// TestControlUpgradeDuringReadyGrace pins issue #18's "a second tcpgrace
// upgrade during -ready-grace is accepted": the new generation took it,
// started a third, and so cut its parent's grace short. Now the new
// generation refuses while its parent still watches it, and the first
// upgrade keeps its whole grace. The old generation is held (SIGSTOP)
// while the second upgrade arrives, so that the new one takes it.
func TestControlUpgradeDuringReadyGrace(t *testing.T) {
	t.Parallel() // it waits out a timeout; nothing it measures is a latency
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl, "-ready-grace", "2s")
	tcp := s.addr("tcp:127.0.0.1:0")
	gen1 := s.pid()
	version := s.deployNext()
	first := startCLI(t, "upgrade", "-control", ctl)
	gen2 := s.waitNextGeneration(gen1)
	s.upgraded(gen2, version, s.bin)

	stopProcess(t, gen1)
	second := runTcpgrace(t, "upgrade", "-control", ctl, "-timeout", "5s")
	require.NoError(t, syscall.Kill(gen1, syscall.SIGCONT))
	assert.Equal(t, 4, second.code, "the second upgrade is refused for now: %s", second)
	assert.Contains(t, second.stderr, "already in progress", "as in progress: %s", second)
	assert.Contains(t, second.stderr, "ready grace", "it says which: %s", second)

	r := <-first
	require.Equal(t, 0, r.code, "the first upgrade succeeds: %s", r)
	var up control.Upgraded
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &up), "%s", r)
	assert.Equal(t, gen2, up.PID)
	assert.GreaterOrEqual(t, up.HandoffMS, 2000.0, "after its whole grace: %s", r)
	s.waitExit(gen1, 0)
	assert.NotContains(t, s.logs.String(), fmt.Sprintf(`msg="upgrade: started next generation" pid=%d `, gen2),
		"the new generation started none")
	assert.Equal(t, gen2, s.pid(), "it serves")
	assert.NoError(t, echoOnce("tcp", tcp, "after"))
}

// TestUpgradeDefaultTimeout pins issue #18's "tcpgrace upgrade with no
// -timeout waits forever": the command now gives every upgrade a timeout
// (2 minutes unless -timeout says otherwise), sends it to the server, and
// waits no longer than that.
func TestUpgradeDefaultTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	got := make(chan control.Request, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadBytes('\n')
		req, _ := control.ParseRequest(line[:max(len(line)-1, 0)])
		got <- req
		control.WriteReply(c, &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{PID: 7}})
	}()
	r := runTcpgrace(t, "upgrade", "-control", path)
	require.Equal(t, 0, r.code, "%s", r)
	req := <-got
	assert.Equal(t, control.CmdUpgrade, req.Cmd)
	assert.Equal(t, int64(2*time.Minute/time.Millisecond), req.TimeoutMS, "the request carries the default timeout")
}

// requesterGoneRe is the log line of a request not carried out, by the
// library's control socket and by tcpgrace run's.
var requesterGoneRe = regexp.MustCompile(`msg="control(?: socket)?: (?:upgrade not started|stop not carried out|request not carried out)"`)

// TestControlRequesterGone pins issue #18's "the abandoned request runs
// later when the server resumes": an upgrade and a stop sent to a stopped
// (SIGSTOP) server by clients that gave up and closed their connections
// are not carried out when it resumes, by lineserver's control socket and
// by tcpgrace run's.
func TestControlRequesterGone(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	requests := []string{`{"v":1,"cmd":"upgrade","timeout_ms":1000}`, `{"v":1,"cmd":"stop"}`}
	t.Run("library", func(t *testing.T) {
		ctl := filepath.Join(t.TempDir(), "control.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
		pid := s.pid()
		s.deployNext()
		stopProcess(t, pid)
		for _, req := range requests {
			goneRequest(t, ctl, req)
		}
		require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
		waitFor(t, "both requests to be dealt with", func() bool {
			logs := s.logs.String()
			return len(requesterGoneRe.FindAllString(logs, -1)) >= 2 || strings.Contains(logs, `msg="upgrade: started`) ||
				strings.Contains(logs, `msg="stop requested`)
		})
		assert.Len(t, requesterGoneRe.FindAllString(s.logs.String(), -1), 2, "neither is carried out\nlogs:\n%s", s.logs)
		assert.Equal(t, pid, ctlStatus(t, ctl).PID, "the same generation serves")
	})
	t.Run("run", func(t *testing.T) {
		dir := t.TempDir()
		tcp, ctl := freeAddr(t), filepath.Join(dir, "ctl.sock")
		s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl}, command: []string{lineserverBin, "-tcp", tcp}})
		stopProcess(t, s.pid)
		for _, req := range requests {
			goneRequest(t, ctl, req)
		}
		require.NoError(t, syscall.Kill(s.pid, syscall.SIGCONT))
		waitFor(t, "both requests to be dealt with", func() bool {
			return s.count(requesterGoneRe) >= 2 || s.count(instanceStartedRe) > 1 || strings.Contains(s.logs.String(), `msg="stopping:`)
		})
		assert.Equal(t, 2, s.count(requesterGoneRe), "neither is carried out\nlogs:\n%s", s.logs)
		assert.Equal(t, 1, s.count(instanceStartedRe), "no instance was started after the first")
		st := ctlStatus(t, ctl)
		assert.Equal(t, "serving", st.State, "the supervisor serves on, not stopping")
		assert.NoError(t, echoOnce("tcp", tcp, "still"))
	})
}

// TestControlClientRefusesOtherUIDServer pins issue #18's "the command
// trusts whoever answers": another user (nobody) bound the control path
// first in a sticky world-writable directory, and tcpgrace upgrade run
// as root printed its forged reply and exited 0. Now the command checks
// who listens (SO_PEERCRED) and refuses anyone but root and its own uid,
// naming the uid and the path, with the status of no answer (2).
func TestControlClientRefusesOtherUIDServer(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	if os.Geteuid() != 0 {
		t.Skip("needs root: the forging server runs as another user (uid 65534)")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		require.NoError(t, os.Chmod(d, 0o755)) // nobody may reach the shared directory and the program
	}
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.Mkdir(shared, 0o755))
	require.NoError(t, os.Chmod(shared, 0o777|os.ModeSticky))
	self, err := os.Executable()
	require.NoError(t, err)
	forger := filepath.Join(dir, "forger")
	require.NoError(t, copyExecutable(forger, self, 0o755))
	ctl := filepath.Join(shared, "control.sock")
	cmd := exec.Command(forger, ctl)
	cmd.Env = append(os.Environ(), roleEnv+"=forge-control")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the forging server's socket", func() bool { _, err := os.Stat(ctl); return err == nil })

	for _, args := range [][]string{{"upgrade"}, {"status"}, {"status", "-human"}, {"stop"}} {
		r := runTcpgrace(t, append(args, "-control", ctl)...)
		assert.Equal(t, 3, r.code, "%v: refused as a server out of reach: %s", args, r)
		assert.Empty(t, r.stdout, "%v: the forged reply is not printed: %s", args, r)
		assert.Contains(t, r.stderr, fmt.Sprintf("%s is held by uid %d", ctl, nobody), "%v: says who and where: %s", args, r)
	}
}

// TestControlSocketModeIgnoresUnixMode pins issue #18's "the control
// socket takes the Unix listeners' mode": with examples/unix -mode 0666
// the listener is 0666 and the control socket stays 0600. A control
// socket file that a generation of an earlier release left 0666 is made
// 0600 by the next generation, since an upgrade keeps the file.
func TestControlSocketModeIgnoresUnixMode(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "u.sock"), filepath.Join(dir, "control.sock")
	s := startExample(t, exampleBin("unix"), nil, "-unix", sock, "-mode", "0666", "-control", ctl)
	checkModes := func(when string) {
		for path, mode := range map[string]os.FileMode{sock: 0o666, ctl: 0o600} {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, mode, fi.Mode().Perm(), "%s: the mode of %s", when, path)
		}
	}
	checkModes("at a cold start")
	require.NoError(t, os.Chmod(ctl, 0o666)) // as a generation of an earlier release left it
	s.upgrade()
	checkModes("after an upgrade")
}

// TestControlTimeoutOverflow pins issue #18's "timeout_ms overflows": a
// timeout_ms of 2^63-1 failed at once with "context deadline exceeded".
// Now lineserver's control socket and tcpgrace run's refuse a timeout
// above 24 h, saying so, and change nothing.
func TestControlTimeoutOverflow(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	const line = `{"v":1,"cmd":"upgrade","timeout_ms":9223372036854775807}`
	check := func(t *testing.T, ctl string) {
		rep := rawRequest(t, ctl, line)
		assert.False(t, rep.OK, "refused")
		assert.Contains(t, rep.Error, "timeout_ms 9223372036854775807 is above the limit of 86400000 (24h)", "and says why")
	}
	t.Run("library", func(t *testing.T) {
		ctl := filepath.Join(t.TempDir(), "control.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
		check(t, ctl)
		assert.NotContains(t, s.logs.String(), `msg="upgrade: started`, "no upgrade started")
	})
	t.Run("run", func(t *testing.T) {
		tcp, ctl := freeAddr(t), filepath.Join(t.TempDir(), "ctl.sock")
		s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl}, command: []string{lineserverBin, "-tcp", tcp}})
		check(t, ctl)
		assert.Equal(t, 1, s.count(instanceStartedRe), "no instance started after the first")
	})
}

// TestControlPIDNamespace checks issue #18's suspicion that "pids in
// status and upgrade replies from inside a PID namespace mean nothing
// outside it": replies now name the server's pid namespace, and the
// command says when it is not its own. tcpgrace run is PID 1 of a new PID
// namespace (unshare); its control socket is asked from here.
func TestControlPIDNamespace(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	tcp, ctl := freeAddr(t), filepath.Join(dir, "ctl.sock")
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl}, command: []string{lineserverBin, "-tcp", tcp}, unshare: true})
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", s.pid))
	require.NoError(t, err)
	ours, err := os.Readlink("/proc/self/ns/pid")
	require.NoError(t, err)
	require.NotEqual(t, ours, theirs, "the supervisor runs in a pid namespace of its own")

	st := ctlStatus(t, ctl)
	assert.Equal(t, 1, st.PID, "status names the supervisor by its pid in its namespace")
	assert.Equal(t, theirs, st.PIDNamespace, "and says which namespace that pid is in")
	r := runTcpgrace(t, "status", "-control", ctl, "-human")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, fmt.Sprintf("pids in pid namespace %s (not ours, %s", theirs, ours), "the text says the pids are not ours: %s", r)
	assert.Contains(t, r.stderr, "not in ours", "so does a note on stderr: %s", r)

	r = runTcpgrace(t, "upgrade", "-control", ctl)
	require.Equal(t, 0, r.code, "%s", r)
	var up control.Upgraded
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &up), "%s", r)
	assert.Equal(t, theirs, up.PIDNamespace, "the upgrade's reply names the namespace of its pids")
	assert.Contains(t, r.stderr, fmt.Sprintf("pid namespace %s, not in ours (%s)", theirs, ours), "and the command notes it: %s", r)
}
