package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// The tests here drive servers through their control socket with the
// tcpgrace command, as a deploy does.

// cliResult is one run of the tcpgrace command.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %s\nstderr: %s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// tcpgraceBin is the built tcpgrace command.
func tcpgraceBin() string { return exampleBin("tcpgrace") }

// runCLI runs the tcpgrace command at bin (as cred, if set) and waits for
// it, up to waitTimeout.
func runCLI(t *testing.T, bin string, cred *syscall.Credential, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	begin := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(begin)}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		require.NoError(t, err, "running tcpgrace %v", args)
	}
	return r
}

// runTcpgrace runs the tcpgrace command as we are.
func runTcpgrace(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCLI(t, tcpgraceBin(), nil, args...)
}

// ctlUpgrade deploys the next build (unless the test deployed one), runs
// tcpgrace upgrade and checks that it exits 0 with one JSON line naming
// the new generation, which is ready, runs that build and is the one the
// pid file names, the old one left to drain.
func (s *server) ctlUpgrade(ctl string) control.Upgraded {
	s.t.Helper()
	version := s.deployNext()
	old := s.pid()
	r := runTcpgrace(s.t, "upgrade", "-control", ctl)
	require.Equal(s.t, 0, r.code, "tcpgrace upgrade should succeed: %s\nlogs:\n%s", r, s.logs)
	require.Equal(s.t, 1, strings.Count(r.stdout, "\n"), "one line on stdout: %s", r)
	var up control.Upgraded
	require.NoError(s.t, json.Unmarshal([]byte(r.stdout), &up), "the line is JSON: %s", r)
	require.NotZero(s.t, up.PID, "it names the new pid: %s", r)
	require.Equal(s.t, old, up.OldPID, "and the old one: %s", r)
	assert.Positive(s.t, up.HandoffMS, "and how long it took: %s", r)
	require.Equal(s.t, up.PID, s.pid(), "the new generation wrote the pid file before the command returned")
	s.mu.Lock()
	s.pids = append(s.pids, up.PID)
	s.mu.Unlock()
	s.waitReadyLog(up.PID)
	s.upgraded(up.PID, version, s.bin)
	return up
}

// ctlStatus runs tcpgrace status, which must succeed, and decodes it.
func ctlStatus(t *testing.T, ctl string) control.Status {
	t.Helper()
	r := runTcpgrace(t, "status", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace status should succeed: %s", r)
	var st control.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), "status is one JSON object: %s", r)
	return st
}

// TestControlUpgradeUnderLoad: three upgrades by tcpgrace upgrade, each
// exiting 0 with the new generation's pid, and one by SIGUSR1 between
// them, under load over TCP and a Unix socket: not one request fails,
// every old generation exits 0, and status then names the serving
// generation and its listeners.
func TestControlUpgradeUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ctl, sock := filepath.Join(dir, "control.sock"), filepath.Join(dir, "line.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock, "-control", ctl, "-drain-timeout", "10s")
	tcp := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 3, 1_000_000)
	l.waitRequests(t, 200)
	for gen := 2; gen <= 5; gen++ {
		old := s.pid()
		if gen == 4 {
			s.upgrade() // signals keep working beside the control socket
			l.waitRequests(t, 200)
			continue
		}
		up := s.ctlUpgrade(ctl)
		assert.Equal(t, gen, up.Generation, "the new generation's number")
		s.waitExit(old, 0)
		l.waitRequests(t, 200)
	}
	l.stopLoad(t)
	st := ctlStatus(t, ctl)
	assert.Equal(t, s.pid(), st.PID, "status is answered by the serving generation")
	assert.Equal(t, 5, st.Generation, "generation 5")
	assert.Equal(t, "serving", st.State)
	assert.Subset(t, st.Listeners, []control.Listener{
		{Name: "tcp:127.0.0.1:0", Network: "tcp", Address: tcp},
		{Name: "unix:" + sock, Network: "unix", Address: sock},
	}, "status lists the listeners with their bound addresses")
	human := runTcpgrace(t, "status", "-control", ctl, "-human")
	require.Equal(t, 0, human.code, "status -human: %s", human)
	assert.Contains(t, human.stdout, fmt.Sprintf("pid %d, generation 5, serving", st.PID), "the text names the generation")
	assert.Contains(t, human.stdout, tcp, "and the listeners")
}

// brokenScript is a deploy gone wrong: a program that says its
// configuration is broken and exits 3.
const brokenScript = "#!/bin/sh\necho 'config error: listen address missing' >&2\nexit 3\n"

// TestControlUpgradeBrokenBinary: after a broken binary is deployed,
// tcpgrace upgrade exits 1 well within the ready timeout, with the
// child's exit status in its message on stderr, and the old generation
// serves on under load; so does an upgrade past its -timeout; after a
// good build, the next upgrade succeeds.
func TestControlUpgradeBrokenBinary(t *testing.T) {
	needShell(t)
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl, "-ready-timeout", "5s")
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	pid := s.pid()

	s.deployBytes([]byte(brokenScript), 0o755)
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	assert.Equal(t, 1, r.code, "the upgrade failed: %s", r)
	assert.Contains(t, r.stderr, "exit status 3", "the reason is the child's exit: %s", r)
	assert.Empty(t, r.stdout, "nothing on stdout")
	assert.Less(t, r.took, 5*time.Second, "within the ready timeout")
	assert.Contains(t, s.logs.String(), "config error: listen address missing", "the child's own words are in the log")
	require.Equal(t, pid, s.pid(), "the old generation is still the serving one")
	require.NoError(t, processAlive(pid), "and alive")
	l.waitRequests(t, 100)

	s.deployBytes([]byte("#!/bin/sh\nexec sleep 5\n"), 0o755) // never ready; killed, it leaves nothing behind
	r = runTcpgrace(t, "upgrade", "-control", ctl, "-timeout", "300ms")
	assert.Equal(t, 1, r.code, "an upgrade past its -timeout fails: %s", r)
	assert.Contains(t, r.stderr, "deadline exceeded", "and says so: %s", r)
	assert.Less(t, r.took, 2*time.Second, "at its timeout: %s", r)
	require.Equal(t, pid, s.pid(), "the old generation still serves")
	l.waitRequests(t, 100)

	s.deploy(lineserverBin)
	s.ctlUpgrade(ctl)
	s.waitExit(pid, 0)
	l.waitRequests(t, 100)
	l.stopLoad(t)
}

// slowStart deploys a wrapper that waits delay before it runs the next
// build, so that an upgrade stays in progress that long.
func (s *server) slowStart(delay time.Duration) string {
	s.t.Helper()
	needShell(s.t)
	version, build := s.nextBuild(s.src)
	s.deployBytes([]byte(fmt.Sprintf("#!/bin/sh\nsleep %g\nexec %s \"$@\"\n", delay.Seconds(), build)), 0o755)
	return version
}

// TestControlConcurrentUpgrades: four tcpgrace upgrade at once while the
// next generation takes 1.5 s to start: exactly one succeeds, the
// others are told at once that an upgrade is in progress; status during
// it says so. Under load.
func TestControlConcurrentUpgrades(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	old := s.pid()
	version := s.slowStart(1500 * time.Millisecond)

	const n = 4
	results := make([]cliResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runTcpgrace(t, "upgrade", "-control", ctl)
		}()
	}
	time.Sleep(300 * time.Millisecond) // not a synchronisation: a status well inside the upgrade
	assert.Equal(t, "upgrading", ctlStatus(t, ctl).State, "status during the upgrade")
	wg.Wait()
	var won []cliResult
	for _, r := range results {
		if r.code == 0 {
			won = append(won, r)
			continue
		}
		assert.Equal(t, 4, r.code, "a refused upgrade exits 4 (refused for now): %s", r)
		assert.Contains(t, r.stderr, "in progress", "and says why: %s", r)
		assert.Less(t, r.took, 800*time.Millisecond, "at once, not after the upgrade: %s", r)
	}
	require.Len(t, won, 1, "exactly one upgrade ran: %v", results)
	var up control.Upgraded
	require.NoError(t, json.Unmarshal([]byte(won[0].stdout), &up), "%s", won[0])
	assert.Equal(t, s.pid(), up.PID, "the winner names the new generation")
	assert.Equal(t, version, startVersion(s.logs.String(), up.PID), "which runs the build deployed")
	s.mu.Lock()
	s.pids = append(s.pids, up.PID)
	s.mu.Unlock()
	s.waitExit(old, 0)
	l.waitRequests(t, 100)
	l.stopLoad(t)
}

// holdConn opens a connection to addr and has one line echoed on it, so
// that the generation serving it now keeps it until the test closes it.
func holdConn(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, requestBudget)
	require.NoError(t, err, "a long connection")
	t.Cleanup(func() { c.Close() })
	var buf [64]byte
	c.SetDeadline(time.Now().Add(requestBudget))
	_, err = c.Write([]byte("held\n"))
	require.NoError(t, err)
	n, err := c.Read(buf[:])
	require.NoError(t, err, "the long connection is served")
	require.Equal(t, "held\n", string(buf[:n]))
	c.SetDeadline(time.Time{})
	return c
}

// olderOf is the draining generations of a status, by pid.
func olderOf(st control.Status) map[int]control.Older {
	m := map[int]control.Older{}
	for _, o := range st.Older {
		m[o.PID] = o
	}
	return m
}

// TestControlStatusWhileDraining: status names the older generations that
// still drain and the connections each has left, asked on their status
// channels, and drops each once it has exited; tcpgrace stop then returns
// once the last generation drains, which ends when its connection does.
func TestControlStatusWhileDraining(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-drain-timeout", "20s")
	tcp := s.addr("tcp:127.0.0.1:0")
	gen1 := s.pid()
	c1 := holdConn(t, "tcp", tcp)
	gen2 := s.ctlUpgrade(ctl).PID
	c2a, c2b := holdConn(t, "tcp", tcp), holdConn(t, "tcp", tcp)
	gen3 := s.ctlUpgrade(ctl).PID

	st := ctlStatus(t, ctl)
	assert.Equal(t, gen3, st.PID, "the serving generation answers")
	assert.Equal(t, map[int]control.Older{
		gen1: {PID: gen1, Generation: 1, Connections: 1},
		gen2: {PID: gen2, Generation: 2, Connections: 2},
	}, olderOf(st), "both older generations drain, with their connections")
	human := runTcpgrace(t, "status", "-control", ctl, "-human")
	assert.Contains(t, human.stdout, fmt.Sprintf("draining: pid %d, generation 2: 2 connections left", gen2), "the text too: %s", human)

	c2a.Close()
	require.Eventually(t, func() bool { return olderOf(ctlStatus(t, ctl))[gen2].Connections == 1 }, waitTimeout, 10*time.Millisecond,
		"generation 2 has one connection left")
	c1.Close()
	s.waitExit(gen1, 0)
	assert.NotContains(t, olderOf(ctlStatus(t, ctl)), gen1, "a generation that has exited is no longer listed")

	c3 := holdConn(t, "tcp", tcp)
	r := runTcpgrace(t, "stop", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace stop: %s", r)
	var stop control.Stopping
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stop), "%s", r)
	assert.Equal(t, control.Stopping{PID: gen3, Connections: 1, PIDNamespace: control.PIDNamespace()}, stop, "the serving generation drains its connection")
	time.Sleep(200 * time.Millisecond) // not a synchronisation: the drain must not end by itself
	assert.NoError(t, processAlive(gen3), "generation 3 drains while its connection is open")
	c3.Close()
	s.waitExit(gen3, 0)
	c2b.Close()
	s.waitExit(gen2, 0)
	_, err := os.Stat(ctl)
	assert.ErrorIs(t, err, os.ErrNotExist, "the control socket is removed by the stop")
}

// TestControlRefusesOtherUID: the control socket is 0600, owned by the
// server's user; even with the file opened to everyone, a request from
// another uid (nobody) is refused by its credentials (SO_PEERCRED) and
// changes nothing, while root is answered.
func TestControlRefusesOtherUID(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	if os.Geteuid() != 0 {
		t.Skip("needs root: the client runs as another user (uid 65534)")
	}
	dir := t.TempDir()
	ctl := filepath.Join(dir, "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	fi, err := os.Stat(ctl)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the control socket is its owner's only")
	assert.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid, "owned by the server's user")

	bin := filepath.Join(t.TempDir(), "tcpgrace")
	require.NoError(t, copyExecutable(bin, tcpgraceBin(), 0o755))
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		require.NoError(t, os.Chmod(d, 0o755)) // nobody may reach the socket and the command
	}
	nobodyCred := &syscall.Credential{Uid: nobody, Gid: nobody}
	r := runCLI(t, bin, nobodyCred, "status", "-control", ctl)
	assert.Equal(t, 3, r.code, "the file's mode keeps nobody out: the server cannot be reached: %s", r)
	assert.Contains(t, r.stderr, "permission denied", "%s", r)

	require.NoError(t, os.Chmod(ctl, 0o666)) // only the credentials check is left
	pid := s.pid()
	for _, cmd := range []string{"status", "upgrade", "stop"} {
		r := runCLI(t, bin, nobodyCred, cmd, "-control", ctl)
		assert.Equal(t, 3, r.code, "%s as nobody is denied by the server (code denied): %s", cmd, r)
		assert.Contains(t, r.stderr, "permission denied: uid 65534 may not ask", "%s: the reply says why: %s", cmd, r)
	}
	assert.Equal(t, pid, s.pid(), "no upgrade happened")
	assert.NoError(t, processAlive(pid), "no stop either")
	assert.Equal(t, pid, ctlStatus(t, ctl).PID, "root is answered")
	assert.Contains(t, s.logs.String(), "peer_uid=65534", "the refusal is logged with the uid")
}

// TestControlGarbageAndSlowClients: clients that send garbage, an
// unknown command, an oversized request, half a request or nothing at
// all, under load: each bad one gets an error reply and is closed, the
// silent ones after the read timeout (2 s); meanwhile status is answered
// at once and not one request of the load fails.
func TestControlGarbageAndSlowClients(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)

	var silent []net.Conn
	for i := range 10 {
		c, err := net.DialTimeout("unix", ctl, requestBudget)
		require.NoError(t, err, "a silent client")
		t.Cleanup(func() { c.Close() })
		if i == 0 {
			_, err = c.Write([]byte(`{"v":1,"cmd":"sta`))
			require.NoError(t, err, "half a request")
		}
		silent = append(silent, c)
	}
	begin := time.Now()
	for _, tc := range []struct{ raw, want string }{
		{"\x00\xff binary garbage\n", "malformed request"},
		{`{"v":1,"cmd":"rm -rf"}` + "\n", `unknown command "rm -rf"`},
		{`{"v":1,"cmd":"status","pad":"` + strings.Repeat("x", 10_000) + `"}` + "\n", "request longer than 4096 bytes"},
	} {
		c, err := net.DialTimeout("unix", ctl, requestBudget)
		require.NoError(t, err)
		c.SetDeadline(time.Now().Add(requestBudget))
		_, err = c.Write([]byte(tc.raw))
		require.NoError(t, err)
		rep, err := control.ReadReply(c)
		require.NoError(t, err, "a reply to %.40q", tc.raw)
		assert.False(t, rep.OK)
		assert.Contains(t, rep.Error, tc.want, "the reply says what was wrong")
		_, err = c.Read(make([]byte, 1))
		assert.Error(t, err, "and the connection is closed")
		c.Close()
	}
	st := ctlStatus(t, ctl)
	assert.Equal(t, s.pid(), st.PID, "status is answered beside the silent clients")
	assert.Less(t, time.Since(begin), time.Second, "at once")
	for i, c := range silent {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		rep, err := control.ReadReply(c)
		require.NoError(t, err, "silent client %d gets a reply", i)
		assert.Contains(t, rep.Error, "no complete request within 2s", "silent client %d: why it is dropped", i)
		_, err = c.Read(make([]byte, 1))
		assert.Error(t, err, "silent client %d is closed", i)
	}
	took := time.Since(begin)
	assert.Less(t, took, 3500*time.Millisecond, "the silent clients are dropped after the 2 s read timeout")
	assert.Greater(t, took, 1500*time.Millisecond, "not before it")
	l.waitRequests(t, 100)
	l.stopLoad(t)
	assert.Equal(t, s.pid(), ctlStatus(t, ctl).PID, "the control socket still answers")
}

// TestControlExamples: the http, grpc and unix examples take -control:
// tcpgrace upgrade, then SIGUSR1 (signals work beside it), then tcpgrace
// stop, after which the serving generation exits 0.
func TestControlExamples(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	for _, tc := range []struct {
		name string
		args func(dir string) []string
	}{
		{"http", func(string) []string { return []string{"-http", "127.0.0.1:0"} }},
		{"grpc", func(string) []string { return []string{"-grpc", "127.0.0.1:0"} }},
		{"unix", func(dir string) []string { return []string{"-unix", filepath.Join(dir, "u.sock")} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctl := filepath.Join(dir, "control.sock")
			s := startExample(t, exampleBin(tc.name), nil, append(tc.args(dir), "-control", ctl)...)
			first := s.pid()
			s.ctlUpgrade(ctl)
			s.waitExit(first, 0)
			second := s.pid()
			s.upgrade()
			s.waitExit(second, 0)
			third := s.pid()
			r := runTcpgrace(t, "stop", "-control", ctl)
			require.Equal(t, 0, r.code, "tcpgrace stop: %s", r)
			assert.Contains(t, r.stdout, fmt.Sprintf(`"pid":%d`, third), "the serving generation stops")
			s.waitExit(third, 0)
		})
	}
}
