package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpgradesUnderLoad: five consecutive upgrades, each to a freshly
// deployed binary, while clients keep connecting over TCP and a Unix
// socket; not one request fails and every old generation exits 0.
func TestUpgradesUnderLoad(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "line.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock, "-drain-timeout", "10s")
	tcp := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 4, 1_000_000)
	l.waitRequests(t, 200)
	for range 5 {
		s.deploy(lineserverBin)
		s.upgrade()
		l.waitRequests(t, 200)
	}
	l.stopLoad(t)
	assert.Len(t, s.pids, 6, "six generations should have served")
	s.stop()
	_, err := os.Stat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "the last generation removes its socket file on stop")
	_, err = os.Stat(s.pidFile)
	assert.ErrorIs(t, err, os.ErrNotExist, "the last generation removes its pid file on stop")
}

// TestUnixSocketSurvivesParentExit: the parent that created the socket
// file exits after handing over; the path still accepts connections.
func TestUnixSocketSurvivesParentExit(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	sock := filepath.Join(t.TempDir(), "line.sock")
	s := startServer(t, nil, "-unix", sock)
	require.NoError(t, echoOnce("unix", sock, "before"), "first generation serves")
	s.upgrade() // waits until the parent has exited
	_, err := os.Stat(sock)
	require.NoError(t, err, "the socket file must outlive the generation that created it")
	assert.NoError(t, echoOnce("unix", sock, "after"), "the socket file still reaches a server")
	s.upgrade()
	assert.NoError(t, echoOnce("unix", sock, "after two"), "and after another generation")
}

// TestIdleUpgrade: with no client at all, the old generation exits
// promptly (a listener switched to blocking mode by (*TCPListener).File
// would hang its Close, and the old process with it), and the new one
// then serves at once.
func TestIdleUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
	tcp := s.addr("tcp:127.0.0.1:0")
	for i := range 3 {
		s.upgrade() // fails the test if the old generation does not exit
		assert.NoError(t, echoOnce("tcp", tcp, "after"), "TCP is served after upgrade %d", i+1)
		assert.NoError(t, echoOnce("unix", sock, "after"), "the Unix socket is served after upgrade %d", i+1)
	}
}

// TestFDCountStable: the serving process holds as many fds after ten
// upgrades as after one, and as many after twenty failed upgrades as
// before them; with a TCP listener on each of IPv4 and IPv6 loopback and
// a Unix socket.
func TestFDCountStable(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	needIPv6Loopback(t)
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-tcp", "[::1]:0", "-unix", filepath.Join(t.TempDir(), "s.sock"))
	after1 := settledFDCount(t, s.upgrade())
	var pid int
	for range 9 {
		pid = s.upgrade()
	}
	assert.Equal(t, after1, settledFDCount(t, pid), "fds of the serving process after 10 upgrades vs after 1")

	before := settledFDCount(t, pid)
	require.NoError(t, os.Remove(s.bin))
	for i := range 20 {
		s.failUpgrade("no such file or directory")
		assert.Equal(t, pid, s.pid(), "failed upgrade %d must not change the serving process", i)
	}
	assert.Equal(t, before, settledFDCount(t, pid), "fds of the serving process before and after 20 failed upgrades")
}

// TestStaleVariableIgnored: a TCPGRACE_FDS written for another process
// (as a grandchild would inherit it) is ignored: the server starts cold.
func TestStaleVariableIgnored(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	stale := fmt.Sprintf("TCPGRACE_FDS=v1;pid=%d;gen=7;ready=3;fd=tcp%%3A127.0.0.1%%3A0,4,tcp,127.0.0.1%%3A0", os.Getpid()+1)
	s := startServer(t, []string{stale}, "-tcp", "127.0.0.1:0")
	assert.NoError(t, echoOnce("tcp", s.addr("tcp:127.0.0.1:0"), "cold"), "a cold start serves")
	assert.Contains(t, s.logs.String(), "generation=1 ", "a stale variable must not make this generation 7")
}

// TestSIGHUPWithoutReloadHook: lineserver has nothing to reload; SIGHUP is
// logged and ignored: same process, still serving, no new generation.
func TestSIGHUPWithoutReloadHook(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0")
	addr := s.addr("tcp:127.0.0.1:0")
	pid := s.pid()
	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	waitFor(t, "the SIGHUP log line", func() bool { return strings.Contains(s.logs.String(), "no reload hook, ignored") })
	assert.NoError(t, echoOnce("tcp", addr, "after HUP"), "still serving after SIGHUP")
	assert.Equal(t, pid, s.pid(), "SIGHUP starts no new generation")
	assert.NoError(t, processAlive(pid))
}
