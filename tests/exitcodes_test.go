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
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// Issue #20's exit codes, each produced by the real command against real
// servers (lineserver, tcpgrace run) and sockets: 0 done, 1 failed, 2
// usage, 3 cannot reach the server, 4 refused for now, 5 outcome unknown;
// and the commands tcpgrace version, reload and stop -wait.

// TestExitCodesLibrary: against lineserver, status exits 0, a failed
// upgrade 1 with the reason, a bad flag 2, and once lineserver is killed
// (its socket file left behind) every command exits 3 (connection
// refused), as for a path with no socket at all.
func TestExitCodesLibrary(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	pid := s.pid()

	r := runTcpgrace(t, "status", "-control", ctl)
	assert.Equal(t, 0, r.code, "status: %s", r)

	s.deployBytes([]byte("#!/bin/sh\necho 'config broken' >&2\nexit 3\n"), 0o755)
	r = runTcpgrace(t, "upgrade", "-control", ctl)
	assert.Equal(t, 1, r.code, "a failed upgrade exits 1: %s", r)
	assert.Contains(t, r.stderr, "exit status 3", "with the reason: %s", r)
	assert.Equal(t, pid, s.pid(), "the old generation serves on")

	for _, args := range [][]string{{"upgrade", "-control", ctl, "-fast"}, {"restart", "-control", ctl}, {"stop", "-control", ctl, "now"}} {
		r = runTcpgrace(t, args...)
		assert.Equal(t, 2, r.code, "%v: a usage error: %s", args, r)
	}
	assert.NoError(t, processAlive(pid), "none of them stopped it")

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	waitFor(t, "lineserver to die", func() bool { return processAlive(pid) != nil })
	_, err := os.Stat(ctl)
	require.NoError(t, err, "the killed server left its socket file")
	for _, cmd := range []string{"status", "upgrade", "stop", "reload"} {
		r = runTcpgrace(t, cmd, "-control", ctl)
		assert.Equal(t, 3, r.code, "%s: nobody listens: %s", cmd, r)
		assert.Contains(t, r.stderr, "connection refused", "%s: says why: %s", cmd, r)
	}
	r = runTcpgrace(t, "status", "-control", filepath.Join(t.TempDir(), "none.sock"))
	assert.Equal(t, 3, r.code, "no socket file: %s", r)
	assert.Contains(t, r.stderr, "no such file or directory", "%s", r)
}

// TestExitCodesRefused: an upgrade past -max-instances (one instance
// still draining a held connection) is refused for now: exit 4 at once,
// and the service is untouched. tcpgrace run, and lineserver with
// -max-generations.
func TestExitCodesRefused(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	t.Run("run", func(t *testing.T) {
		dir := t.TempDir()
		tcp, ctl := freeAddr(t), filepath.Join(dir, "ctl.sock")
		s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl, "-max-instances", "2"},
			command: []string{lineserverBin, "-tcp", tcp, "-drain-timeout", "20s"}})
		held := holdConn(t, "tcp", tcp)
		r := runTcpgrace(t, "upgrade", "-control", ctl)
		require.Equal(t, 0, r.code, "the first upgrade: %s", r)
		r = runTcpgrace(t, "upgrade", "-control", ctl)
		assert.Equal(t, 4, r.code, "refused for now: %s", r)
		assert.Contains(t, r.stderr, "too many instances alive", "%s", r)
		held.Close()
		require.NoError(t, s.stop())
	})
	t.Run("library", func(t *testing.T) {
		ctl := filepath.Join(t.TempDir(), "control.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-max-generations", "2", "-drain-timeout", "20s")
		held := holdConn(t, "tcp", s.addr("tcp:127.0.0.1:0"))
		s.ctlUpgrade(ctl)
		r := runTcpgrace(t, "upgrade", "-control", ctl)
		assert.Equal(t, 4, r.code, "refused for now: %s", r)
		held.Close()
	})
}

// closingServer is a Unix socket in a temp dir whose server reads each
// request line and closes without a reply, as a server that died
// mid-request does.
func closingServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "closing.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadBytes('\n')
			c.Close()
		}
	}()
	return path
}

// TestExitCodesOutcomeUnknown: a request the server took and never
// answered exits 5 (the server may have carried it out): a server that
// reads the request and closes, and a tcpgrace run killed (SIGKILL) while
// the upgrade it was asked for runs.
func TestExitCodesOutcomeUnknown(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	path := closingServer(t)
	for _, cmd := range []string{"upgrade", "stop", "reload", "status"} {
		r := runTcpgrace(t, cmd, "-control", path)
		assert.Equal(t, 5, r.code, "%s: %s", cmd, r)
		assert.Contains(t, r.stderr, "request sent, no reply", "%s: says so: %s", cmd, r)
	}

	dir := t.TempDir()
	tcp, ctl, app := freeAddr(t), filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "app")
	deployAt(t, app, []byte(fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", lineserverBin)))
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl}, command: []string{app, "-tcp", tcp}})
	deployAt(t, app, []byte(fmt.Sprintf("#!/bin/sh\nsleep 30\nexec %s \"$@\"\n", lineserverBin))) // never ready in time
	up := startCLI(t, "upgrade", "-control", ctl)
	s.waitLog(`msg="instance started" pid=\d+ instance=\d+ generation=2 `)
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGKILL))
	r := <-up
	assert.Equal(t, 5, r.code, "the supervisor died with the upgrade under way: %s", r)
}

// TestVersionCommand: tcpgrace version names the build's stamp, the
// module, the VCS revision and time the toolchain recorded (as go version
// -m reads them; none under -buildvcs=false) and the Go version, with no
// control socket.
func TestVersionCommand(t *testing.T) {
	r := runTcpgrace(t, "version")
	require.Equal(t, 0, r.code, "%s", r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.NotEmpty(t, lines, "%s", r)
	assert.Equal(t, "tcpgrace "+versions[0], lines[0], "the version stamped in first")
	assert.Contains(t, r.stdout, "\nmodule: github.com/tcpgrace/tcpgrace ", "the module")
	assert.Contains(t, r.stdout, "\ngo: "+runtime.Version()+"\n", "built by our Go")
	info, err := exec.Command("go", "version", "-m", tcpgraceBin()).Output()
	require.NoError(t, err, "go version -m")
	for _, key := range []string{"vcs.revision", "vcs.time"} {
		m := regexp.MustCompile(`\sbuild\s+` + regexp.QuoteMeta(key) + `=(\S+)`).FindSubmatch(info)
		name := strings.TrimPrefix(key, "vcs.")
		if m == nil {
			assert.NotContains(t, r.stdout, "\n"+name+": ", "no %s recorded, none printed", key)
			continue
		}
		assert.Contains(t, r.stdout, "\n"+name+": "+string(m[1]), "the %s recorded", key)
	}
	r = runTcpgrace(t, "version", "-h")
	assert.Equal(t, 0, r.code, "%s", r)
}

// TestReloadRun: tcpgrace reload against tcpgrace run sends SIGHUP to the
// serving instance (the test's reload role, whose hook logs) and names
// it; with nothing to reload the supervisor refuses for now.
func TestReloadRun(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	tcp, ctl := freeAddr(t), filepath.Join(dir, "ctl.sock")
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl},
		command: []string{self, "-tcp", tcp}, env: []string{serverRoleEnv + "=reload", "GORACE=" + gorace}})
	r := runTcpgrace(t, "reload", "-control", ctl)
	require.Equal(t, 0, r.code, "%s", r)
	var rel control.Reloaded
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rel), "one line of JSON: %s", r)
	assert.Equal(t, s.serving(), rel.PID, "it names the serving instance")
	assert.Equal(t, 1, rel.Generation)
	assert.Equal(t, control.PIDNamespace(), rel.PIDNamespace)
	s.waitLog(fmt.Sprintf(`msg="reload hook: end" pid=%d`, rel.PID))
	assert.Contains(t, s.logs.String(), "SIGHUP forwarded", "the supervisor logs it")

	require.NoError(t, s.stop())
	r = runTcpgrace(t, "reload", "-control", ctl)
	assert.Equal(t, 3, r.code, "the supervisor is gone: %s", r)
}

// TestReloadLibrary: tcpgrace reload against the library runs the
// server's reload hook and replies once it has returned; a server with no
// hook (lineserver) fails (exit 1) and serves on.
func TestReloadLibrary(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startRole(t, "reload", "-tcp", "127.0.0.1:0", "-control", ctl, "-reload-delay", "300ms")
	r := runTcpgrace(t, "reload", "-control", ctl)
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, s.logs.String(), "reload hook: end", "the reply came once the hook had returned")
	var rel control.Reloaded
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rel), "one line of JSON: %s", r)
	assert.Equal(t, s.pid(), rel.PID)

	ctl = filepath.Join(t.TempDir(), "control.sock")
	ls := startServer(t, nil, "-tcp", "127.0.0.1:0", "-control", ctl)
	r = runTcpgrace(t, "reload", "-control", ctl)
	assert.Equal(t, 1, r.code, "no reload hook: %s", r)
	assert.Contains(t, r.stderr, "reload", "%s", r)
	assert.NoError(t, processAlive(ls.pid()), "it serves on")
}

// TestStopWait: tcpgrace stop -wait returns once every generation has
// exited, the older one still draining included (0); at its -timeout it
// exits 1 naming the pid left. Against tcpgrace run it waits for the
// supervisor, in our pid namespace and in another one (where it waits
// until the control socket is gone).
func TestStopWait(t *testing.T) {
	t.Run("older draining", func(t *testing.T) {
		ctl := filepath.Join(t.TempDir(), "control.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-drain-timeout", "1s")
		old := s.pid()
		holdConn(t, "tcp", s.addr("tcp:127.0.0.1:0")) // keeps the old one draining for its -drain-timeout
		up := s.ctlUpgrade(ctl)
		require.NoError(t, processAlive(old), "the old generation drains")
		r := runTcpgrace(t, "stop", "-control", ctl, "-wait", "-timeout", "10s")
		require.Equal(t, 0, r.code, "%s", r)
		assert.Contains(t, r.stdout, fmt.Sprintf(`"pid":%d`, up.PID), "the stop's reply: %s", r)
		assert.Error(t, processAlive(old), "the old generation has exited when it returns")
		assert.Error(t, processAlive(up.PID), "and the new one")
	})
	t.Run("timeout", func(t *testing.T) {
		ctl := filepath.Join(t.TempDir(), "control.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-drain-timeout", "20s")
		pid := s.pid()
		held := holdConn(t, "tcp", s.addr("tcp:127.0.0.1:0"))
		r := runTcpgrace(t, "stop", "-control", ctl, "-wait", "-timeout", "300ms")
		assert.Equal(t, 1, r.code, "%s", r)
		assert.Contains(t, r.stderr, fmt.Sprintf("pid %d still running after -timeout 300ms", pid), "%s", r)
		held.Close()
		s.waitExit(pid, 0)
	})
	for _, ns := range []bool{false, true} {
		t.Run(fmt.Sprintf("run, own pid namespace %v", ns), func(t *testing.T) {
			dir := t.TempDir()
			tcp, ctl := freeAddr(t), filepath.Join(dir, "ctl.sock")
			s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-control", ctl}, unshare: ns,
				command: []string{lineserverBin, "-tcp", tcp}})
			r := runTcpgrace(t, "stop", "-control", ctl, "-wait", "-timeout", "10s")
			require.Equal(t, 0, r.code, "%s", r)
			select {
			case err := <-s.done:
				s.done <- err
				assert.NoError(t, err, "the supervisor exited 0")
			case <-time.After(time.Second):
				t.Fatalf("the supervisor still runs after stop -wait returned: %s", r)
			}
		})
	}
}
