//go:build linux

package tcpgrace

import (
	"context"
	"fmt"
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

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestParseNotify: which environments mean a manager listens, and
// whether the watchdog is meant for this process.
func TestParseNotify(t *testing.T) {
	pid := 4242
	for _, tc := range []struct {
		name     string
		env      map[string]string
		enabled  bool
		watchdog time.Duration
		childEnv []string
	}{
		{"nothing", nil, false, 0, nil},
		{"empty socket", map[string]string{envNotifySocket: ""}, false, 0, nil},
		{"vsock is not spoken", map[string]string{envNotifySocket: "vsock:2:1"}, false, 0, nil},
		{"path", map[string]string{envNotifySocket: "/run/systemd/notify"}, true, 0,
			[]string{"NOTIFY_SOCKET=/run/systemd/notify"}},
		{"abstract", map[string]string{envNotifySocket: "@sd"}, true, 0, []string{"NOTIFY_SOCKET=@sd"}},
		{"watchdog for us", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "2000000", envWatchdogPID: "4242"},
			true, 2 * time.Second, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=2000000"}},
		{"watchdog without a pid is ours", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "5000"},
			true, 5 * time.Millisecond, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=5000"}},
		{"watchdog that wrapped", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "18446744073709552"},
			true, 0, []string{"NOTIFY_SOCKET=/n"}},
		{"watchdog below the minimum", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "500"},
			true, 0, []string{"NOTIFY_SOCKET=/n"}},
		{"watchdog for another pid", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "2000000", envWatchdogPID: "1"},
			true, 0, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=2000000"}},
		{"malformed watchdog", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "soon"},
			true, 0, []string{"NOTIFY_SOCKET=/n"}},
		{"zero watchdog", map[string]string{envNotifySocket: "/n", envWatchdogUsec: "0"},
			true, 0, []string{"NOTIFY_SOCKET=/n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := parseNotify(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, pid)
			assert.Equal(t, tc.enabled, n.enabled(), "whether a manager listens")
			assert.Equal(t, tc.watchdog, n.watchdog, "the watchdog interval")
			assert.Equal(t, tc.childEnv, n.childEnv(), "what the next generation gets")
		})
	}
}

// TestParseWatchdog: WATCHDOG_USEC within bounds is the interval; one
// that is not a number, below a millisecond or longer than a
// time.Duration holds (issue #18: 18446744073709552 wrapped to 384 ns)
// is an error that names the variable and its value.
func TestParseWatchdog(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration
		err   string // "" for none
	}{
		{"", 0, ""},
		{"0", 0, ""},
		{"1000", time.Millisecond, ""},
		{"30000000", 30 * time.Second, ""},
		{"9223372036854775", 9223372036854775 * time.Microsecond, ""},
		{"9223372036854776", 0, "WATCHDOG_USEC=9223372036854776 is more µs than a time.Duration holds"},
		{"18446744073709552", 0, "WATCHDOG_USEC=18446744073709552 is more µs than a time.Duration holds"},
		{"18446744073709551615", 0, "WATCHDOG_USEC=18446744073709551615 is more µs than a time.Duration holds"},
		{"18446744073709551616", 0, `WATCHDOG_USEC="18446744073709551616" is not a number`},
		{"999", 0, "WATCHDOG_USEC=999 is below the minimum of 1ms"},
		{"1", 0, "WATCHDOG_USEC=1 is below the minimum"},
		{"-5", 0, `WATCHDOG_USEC="-5" is not a number`},
		{"soon", 0, `WATCHDOG_USEC="soon" is not a number`},
		{"10s", 0, `WATCHDOG_USEC="10s" is not a number`},
	} {
		got, err := parseWatchdog(tc.value)
		assert.Equal(t, tc.want, got, "the interval for %q", tc.value)
		if tc.err == "" {
			assert.NoError(t, err, "%q is a valid interval", tc.value)
		} else if assert.Error(t, err, "%q is refused", tc.value) {
			assert.Contains(t, err.Error(), tc.err, "the error names the variable and the value")
		}
	}
}

// TestNotifyNeverWaits (issue #18): a manager that reads nothing fills
// its queue; then a message is dropped at once with an error, not
// waited for, and a warning is due only once per sdWarnEvery.
func TestNotifyNeverWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stalled")
	stalled, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err, "a manager socket nobody reads")
	defer stalled.Close()
	n := parseNotify(func(k string) (string, bool) { return path, k == envNotifySocket }, os.Getpid())
	var failed error
	for i := 0; i < 10000 && failed == nil; i++ {
		done := make(chan error, 1)
		go func() { done <- n.send("WATCHDOG=1") }()
		select {
		case failed = <-done:
		case <-time.After(ioTimeout):
			require.FailNow(t, "send waits for a manager that reads nothing", "message %d", i)
		}
	}
	require.Error(t, failed, "the queue of a manager that reads nothing fills up")
	assert.Contains(t, failed.Error(), path, "the error names the socket")
	now := time.Now()
	lost, due := n.warnDue(now)
	assert.True(t, due, "the first failure is logged")
	assert.Equal(t, 1, lost, "one message was lost")
	assert.Error(t, n.send("WATCHDOG=1"), "the queue is still full")
	_, due = n.warnDue(now.Add(time.Second))
	assert.False(t, due, "the next failure within sdWarnEvery is not logged")
	assert.Error(t, n.send("WATCHDOG=1"), "the queue is still full")
	lost, due = n.warnDue(now.Add(sdWarnEvery))
	assert.True(t, due, "a failure after sdWarnEvery is logged again")
	assert.Equal(t, 2, lost, "with the messages lost since the last warning")
}

// TestNotifyNothingWithoutSocket: no NOTIFY_SOCKET, no message and no
// socket.
func TestNotifyNothingWithoutSocket(t *testing.T) {
	var n *sdNotifier
	assert.NoError(t, n.send("READY=1"), "a nil notifier sends nothing")
	n = parseNotify(func(string) (string, bool) { return "", false }, os.Getpid())
	assert.NoError(t, n.send("READY=1"), "a notifier without a socket sends nothing")
	assert.Nil(t, n.conn, "no socket is opened")
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
	return parseNotify(func(k string) (string, bool) {
		if k == envNotifySocket {
			return l.path, true
		}
		return "", false
	}, os.Getpid())
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
	t.Setenv(envNotifySocket, "@tcpgrace-test")
	t.Setenv(envWatchdogUsec, "1000000")
	t.Setenv(envWatchdogPID, strconv.Itoa(os.Getpid()))
	sdTakeOnce = sync.Once{} // as in a fresh process
	t.Cleanup(func() { sdTakeOnce = sync.Once{} })
	files, err := wire.Open(nil)
	require.NoError(t, err, "a cold start")
	u, err := newUpgrader(Options{Executable: "/bin/true"}, files)
	require.NoError(t, err, "newUpgrader")
	t.Cleanup(func() { u.Close() })
	assert.True(t, u.sd.enabled(), "the Upgrader speaks to the manager")
	assert.Equal(t, time.Second, u.sd.watchdog, "and pings its watchdog")
	for _, k := range []string{envNotifySocket, envWatchdogUsec, envWatchdogPID} {
		_, ok := os.LookupEnv(k)
		assert.False(t, ok, "%s is gone from the environment that spawned processes inherit", k)
	}
	env := u.command(nil, &wire.Env{Generation: 2}).Env
	assert.Contains(t, env, "NOTIFY_SOCKET=@tcpgrace-test", "the next generation gets the socket")
	assert.Contains(t, env, "WATCHDOG_USEC=1000000", "and the watchdog interval")
	assert.NotContains(t, strings.Join(env, "\n"), envWatchdogPID+"=", "but not the pid it was meant for")
	other, err := wire.Open(nil)
	require.NoError(t, err, "a cold start")
	u2, err := newUpgrader(Options{Executable: "/bin/true"}, other)
	require.NoError(t, err, "a second newUpgrader")
	t.Cleanup(func() { u2.Close() })
	assert.False(t, u2.sd.enabled(), "only the first Upgrader of a process takes the variables")
}
