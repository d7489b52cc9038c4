package tests

import (
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// How tcpgrace run stops (issue #18): what a stop does to new clients,
// stop and reload signals that arrive during a self-upgrade, and what a
// supervisor killed outright leaves behind.

// refusedWithin dials network addr until the dial fails at once with
// one of want, and fails the test if it still connects after timeout: a
// connection that the dial completes sits in an accept queue.
func refusedWithin(t *testing.T, network, addr string, timeout time.Duration, want ...error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		c, err = net.DialTimeout(network, addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	require.Error(t, err, "a new %s client is still connected %v into the stop: it waits in a queue nobody accepts from", network, timeout)
	for _, w := range want {
		if errors.Is(err, w) {
			return
		}
	}
	t.Fatalf("a new %s client: %v, want one of %v", network, err, want)
}

// TestRunStopRefusesNewClients (issue #18, item 4): once tcpgrace run is
// told to stop, a new client is refused at once, on TCP (ECONNREFUSED)
// and on Unix (the socket file is gone), while a connection held open
// through the drain is still served. Before, the supervisor kept its
// copies of the listening sockets until it exited, so a client that
// connected during the drain hung until it was reset.
func TestRunStopRefusesNewClients(t *testing.T) {
	dir := t.TempDir()
	tcp, sock := freeAddr(t), filepath.Join(dir, "s.sock")
	s := startRun(t, runSpec{
		flags:   []string{"-stop-timeout", "3s", "-listen", "tcp://" + tcp, "-listen", "unix://" + sock},
		command: []string{lineserverBin, "-tcp", tcp, "-unix", sock, "-drain-timeout", "3s"},
	})
	held := holdConn(t, "tcp", tcp)

	stopAt := time.Now()
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGTERM))
	s.waitLog(`msg="stopping: forwarding the signal to every instance"`)
	refusedWithin(t, "tcp", tcp, time.Second, syscall.ECONNREFUSED)
	refusedWithin(t, "unix", sock, time.Second, syscall.ENOENT, syscall.ECONNREFUSED)
	assert.NoFileExists(t, sock, "the supervisor removes its Unix socket file as the stop begins")

	held.SetDeadline(time.Now().Add(requestBudget))
	_, err := held.Write([]byte("still\n"))
	require.NoError(t, err)
	var buf [64]byte
	n, err := held.Read(buf[:])
	require.NoError(t, err, "the held connection is served through the drain")
	assert.Equal(t, "still\n", string(buf[:n]))
	select {
	case err := <-s.done:
		t.Fatalf("the supervisor exited (%v) while a connection was still open", err)
	default:
	}
	held.Close()
	require.NoError(t, s.wait(), "the instance drains its last connection and the supervisor exits 0")
	t.Logf("stopped %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
}
