//go:build linux

package tcpgrace

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestNotifyNothingWithoutSocket: no NOTIFY_SOCKET, no message and no
// socket; a nil notifier is one without a manager.
func TestNotifyNothingWithoutSocket(t *testing.T) {
	var n *sdNotifier
	assert.False(t, n.enabled(), "a nil notifier has no manager")
	assert.Nil(t, n.childEnv(), "and hands nothing on")
	n.notify(slog.Default(), "READY=1") // sends nothing, does not panic
	n = newNotifier(sdnotify.Parse(func(string) (string, bool) { return "", false }, os.Getpid()))
	assert.False(t, n.enabled(), "a notifier without a socket has no manager")
	assert.Nil(t, n.sender, "no socket is opened")
	n.notify(slog.Default(), "READY=1")
}

// sdListener is a fake service manager: a datagram socket that collects
// messages.
type sdListener struct {
	t    *testing.T
	path string
	conn *net.UnixConn
	msgs chan string
}

func newSDListener(t *testing.T, abstract bool) *sdListener {
	dir, err := os.MkdirTemp("", "sd") // short: a socket path has 108 bytes
	require.NoError(t, err, "a temp dir for the notify socket")
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	if abstract {
		path = fmt.Sprintf("@tcpgrace-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err, "the fake manager listens on %s", path)
	l := &sdListener{t: t, path: path, conn: c, msgs: make(chan string, 100)}
	go func() {
		defer close(l.msgs)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return l
}

func (l *sdListener) notifier() *sdNotifier {
	return newNotifier(sdnotify.Parse(func(k string) (string, bool) {
		if k == sdnotify.EnvNotifySocket {
			return l.path, true
		}
		return "", false
	}, os.Getpid()))
}

// next returns the next message that contains want, skipping others
// (EXTEND_TIMEOUT_USEC= ticks).
func (l *sdListener) next(want string) string {
	l.t.Helper()
	timeout := time.After(ioTimeout)
	for {
		select {
		case m := <-l.msgs:
			if strings.Contains(m, want) {
				return m
			}
		case <-timeout:
			require.FailNow(l.t, "no notify message", "no message with %q within %v", want, ioTimeout)
		}
	}
}

// TestNotifyReadyAndStop: a first generation says READY=1 with its
// status at Ready, STOPPING=1 when it shuts down; on a path and an
// abstract socket.
func TestNotifyReadyAndStop(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			l := newSDListener(t, abstract)
			u := newColdUpgrader(t, Options{})
			u.sd = l.notifier()
			require.NoError(t, u.Ready(), "Ready of a first generation")
			assert.Equal(t, "READY=1\nSTATUS=serving, generation 1\n", l.next("READY=1"), "a first generation says ready")
			require.NoError(t, u.Shutdown(context.Background()), "Shutdown")
			assert.Equal(t, "STOPPING=1\nSTATUS=draining 0 connections, generation 1\n", l.next("STOPPING=1"),
				"the main process says it stops")
		})
	}
}

// TestNotifyUpgrade: an upgrade says RELOADING=1, then MAINPID=<child>
// and READY=1 from the parent; the child, handed NOTIFY_SOCKET, speaks
// as the main process from then on.
func TestNotifyUpgrade(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	l := newSDListener(t, false)
	h.u.sd = l.notifier()
	require.NoError(t, h.u.Upgrade(context.Background()), "the upgrade should succeed")
	pid := h.startedChild()
	m := l.next("RELOADING=1")
	assert.Contains(t, m, "STATUS=upgrading to generation 2\n", "the upgrade says where it goes")
	assert.Contains(t, m, "MONOTONIC_USEC=", "RELOADING=1 carries the clock systemd 253 wants")
	assert.Equal(t, fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=serving, generation 2\n", pid), l.next("MAINPID="),
		"the parent names the child main process and the service ready")
	require.NoError(t, h.u.Shutdown(context.Background()), "the parent's Shutdown")
	// The child inherited NOTIFY_SOCKET: as main process, it says it stops.
	h.stopChild(pid)
	assert.Contains(t, l.next("STOPPING=1"), "generation 2", "the child, now the main process, says it stops")
}

// TestNotifyFailedUpgrade: a failed upgrade says READY=1 again, with
// the reason in STATUS=, and the main process stays.
func TestNotifyFailedUpgrade(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	l := newSDListener(t, false)
	h.u.sd = l.notifier()
	h.useChild(childFail)
	require.Error(t, h.u.Upgrade(context.Background()), "the upgrade should fail")
	l.next("RELOADING=1")
	m := l.next("READY=1")
	assert.Contains(t, m, "STATUS=serving, generation 1; upgrade failed: ", "the status says the upgrade failed")
	assert.Contains(t, m, childFailReason, "and why")
	assert.NotContains(t, m, "MAINPID=", "the main process stays")
}

// TestNotifyWatchdog: a serving generation pings the watchdog at half
// its interval.
func TestNotifyWatchdog(t *testing.T) {
	l := newSDListener(t, false)
	u := newColdUpgrader(t, Options{})
	u.sd = l.notifier()
	u.sd.watchdog = 20 * time.Millisecond
	require.NoError(t, u.Ready(), "Ready")
	for range 3 {
		l.next("WATCHDOG=1")
	}
	require.NoError(t, u.Shutdown(context.Background()), "Shutdown")
	l.next("STOPPING=1")
}

// TestTakeNotifyHidesSocket: New takes NOTIFY_SOCKET and the watchdog
// variables out of the environment, so a process the program spawns
// cannot speak for it, and hands them to the next generation only
// (WATCHDOG_PID left out: it names this process).
func TestTakeNotifyHidesSocket(t *testing.T) {
	t.Setenv(sdnotify.EnvNotifySocket, "@tcpgrace-test")
	t.Setenv(sdnotify.EnvWatchdogUsec, "1000000")
	t.Setenv(sdnotify.EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	sdTakeOnce = sync.Once{} // as in a fresh process
	t.Cleanup(func() { sdTakeOnce = sync.Once{} })
	files, err := wire.Open(nil)
	require.NoError(t, err, "a cold start")
	u, err := newUpgrader(Options{Executable: "/bin/true"}, files)
	require.NoError(t, err, "newUpgrader")
	t.Cleanup(func() { u.Close() })
	assert.True(t, u.sd.enabled(), "the Upgrader speaks to the manager")
	assert.Equal(t, time.Second, u.sd.watchdog, "and pings its watchdog")
	for _, k := range []string{sdnotify.EnvNotifySocket, sdnotify.EnvWatchdogUsec, sdnotify.EnvWatchdogPID} {
		_, ok := os.LookupEnv(k)
		assert.False(t, ok, "%s is gone from the environment that spawned processes inherit", k)
	}
	env := u.childEnv(&wire.Env{Generation: 2})
	assert.Contains(t, env, "NOTIFY_SOCKET=@tcpgrace-test", "the next generation gets the socket")
	assert.Contains(t, env, "WATCHDOG_USEC=1000000", "and the watchdog interval")
	assert.NotContains(t, strings.Join(env, "\n"), sdnotify.EnvWatchdogPID+"=", "but not the pid it was meant for")
	other, err := wire.Open(nil)
	require.NoError(t, err, "a cold start")
	u2, err := newUpgrader(Options{Executable: "/bin/true"}, other)
	require.NoError(t, err, "a second newUpgrader")
	t.Cleanup(func() { u2.Close() })
	assert.False(t, u2.sd.enabled(), "only the first Upgrader of a process takes the variables")
}
