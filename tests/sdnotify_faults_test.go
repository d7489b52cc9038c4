package tests

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A service manager that misbehaves (issue #18, items 12 and 13): it
// reads nothing, or hands over a WATCHDOG_USEC that would overflow. The
// server and `tcpgrace run` must go on as if it were not there.

// stopBound is how long a server with nothing to drain may take to exit
// after SIGTERM; it took well under a second here (a stalled manager kept
// it forever).
const stopBound = 5 * time.Second

// stalledManager is a NOTIFY_SOCKET that nobody reads; fillQueue makes
// it stall.
func stalledManager(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err, "the manager's socket")
	t.Cleanup(func() { ln.Close() })
	return path
}

// fillQueue sends datagrams to path without waiting until its receive
// queue has no room left (net.unix.max_dgram_qlen): until a fresh
// socket's first datagram finds it full. (One socket alone may run out
// of its own send buffer first, which every queued datagram is charged
// to.)
func fillQueue(t *testing.T, path string) {
	t.Helper()
	for range 1000 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		sent := 0
		for ; sent < 100_000; sent++ {
			err = unix.Sendto(fd, []byte("STATUS=filler\n"), unix.MSG_DONTWAIT, &unix.SockaddrUnix{Name: path})
			if err != nil {
				break
			}
		}
		unix.Close(fd) // what it sent stays queued
		require.ErrorIs(t, err, unix.EAGAIN, "filling the queue of %s", path)
		if sent == 0 {
			return
		}
	}
	t.Fatalf("the queue of %s never filled up", path)
}

// exitsWithin waits up to d for done (a process's Wait result) and
// fails the test if the process is still running then.
func exitsWithin(t *testing.T, done <-chan error, d time.Duration, what, logs string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s still runs %v after SIGTERM\nlogs:\n%s", what, d, logs)
		return nil
	}
}

// sdWarnings counts the warnings of failed notifications in logs.
func sdWarnings(logs string) int {
	return len(regexp.MustCompile(`level=WARN msg="?sd_notify[^\n]*(message dropped|messages dropped)`).FindAllString(logs, -1))
}

// TestSDNotifyStalledLineserver: with a manager that reads nothing and a
// 20 ms watchdog, lineserver still serves, stops at once on SIGTERM and
// logs the dropped messages once, not once per ping.
func TestSDNotifyStalledLineserver(t *testing.T) {
	path := stalledManager(t)
	s := startServer(t, []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=20000"}, "-tcp", "127.0.0.1:0")
	fillQueue(t, path) // from now on every message finds the queue full
	require.NoError(t, echoOnce("tcp", s.addr("tcp:127.0.0.1:0"), "still serving"), "lineserver serves")
	begin := time.Now()
	require.NoError(t, syscall.Kill(s.first.Process.Pid, syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- s.first.Wait() }()
	require.NoError(t, exitsWithin(t, done, stopBound, "lineserver", s.logs.String()), "lineserver exits 0\nlogs:\n%s", s.logs)
	logs := s.logs.String()
	n := sdWarnings(logs)
	assert.GreaterOrEqual(t, n, 1, "the lost notifications are logged\nlogs:\n%s", logs)
	assert.LessOrEqual(t, n, 1+int(time.Since(begin)/(10*time.Second)), "at most one warning every 10 s, not one per ping\nlogs:\n%s", logs)
}

// TestSDNotifyStalledRun: with a manager that reads nothing and a 20 ms
// watchdog, tcpgrace run still answers tcpgrace status, stops at once on
// SIGTERM, and logs the dropped messages once.
func TestSDNotifyStalledRun(t *testing.T) {
	path := stalledManager(t)
	ctl := filepath.Join(t.TempDir(), "control.sock")
	tcp := freeAddr(t)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-control", ctl, "-stop-timeout", "3s"},
		command: []string{lineserverBin, "-tcp", tcp},
		env:     []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=20000"},
	})
	fillQueue(t, path) // from now on every ping finds the queue full
	require.NoError(t, echoOnce("tcp", tcp, "still serving"), "the instance serves")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out bytes.Buffer
	status := exec.CommandContext(ctx, tcpgraceBin(), "status", "-control", ctl)
	status.Stdout, status.Stderr = &out, &out
	require.NoError(t, status.Run(), "tcpgrace status answers while the manager stalls: %s\nlogs:\n%s", &out, s.logs)
	assert.Contains(t, out.String(), `"serving"`, "and names the serving instance")

	begin := time.Now()
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGTERM))
	require.NoError(t, exitsWithin(t, s.done, stopBound, "tcpgrace run", s.logs.String()), "tcpgrace run exits 0\nlogs:\n%s", s.logs)
	s.done <- nil // for cleanup
	logs := s.logs.String()
	n := sdWarnings(logs)
	assert.GreaterOrEqual(t, n, 1, "the lost notifications are logged\nlogs:\n%s", logs)
	assert.LessOrEqual(t, n, 1+int(time.Since(begin)/(10*time.Second)), "at most one warning every 10 s, not one per ping\nlogs:\n%s", logs)
}

// countWatchdog counts the WATCHDOG=1 messages that arrive on conn for d.
func countWatchdog(t *testing.T, conn *net.UnixConn, d time.Duration) int {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	n := 0
	for {
		k, err := conn.Read(buf)
		if err != nil {
			require.True(t, errors.Is(err, context.DeadlineExceeded) || isTimeout(err), "reading the manager's socket: %v", err)
			return n
		}
		n += strings.Count(string(buf[:k]), "WATCHDOG=1\n")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestSDNotifyWatchdogOverflow: WATCHDOG_USEC=18446744073709552 (µs that
// overflow a time.Duration; it wrapped to 384 ns and sent about 180,000
// WATCHDOG=1 a second) is ignored with a warning that names it, by
// lineserver and by tcpgrace run: no flood of pings.
func TestSDNotifyWatchdogOverflow(t *testing.T) {
	const usec = "18446744073709552"
	manager := func(t *testing.T) (string, *net.UnixConn) {
		path := filepath.Join(t.TempDir(), "notify")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		require.NoError(t, err, "the manager's socket")
		t.Cleanup(func() { conn.Close() })
		return path, conn
	}
	env := func(path string) []string { return []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=" + usec} }
	warning := regexp.MustCompile(`level=WARN msg=sd_notify .*WATCHDOG_USEC=` + usec)
	t.Run("lineserver", func(t *testing.T) {
		t.Parallel()
		path, conn := manager(t)
		s := startServer(t, env(path), "-tcp", "127.0.0.1:0")
		assert.LessOrEqual(t, countWatchdog(t, conn, time.Second), 2, "few or no WATCHDOG=1 in a second")
		assert.Regexp(t, warning, s.logs.String(), "a warning names the variable and its value")
		s.stop()
	})
	t.Run("run", func(t *testing.T) {
		t.Parallel()
		path, conn := manager(t)
		tcp := freeAddr(t)
		s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp}, command: []string{lineserverBin, "-tcp", tcp}, env: env(path)})
		assert.LessOrEqual(t, countWatchdog(t, conn, time.Second), 2, "few or no WATCHDOG=1 in a second")
		assert.Regexp(t, warning, s.logs.String(), "a warning names the variable and its value")
		require.NoError(t, s.stop(), "tcpgrace run exits 0")
	})
}
