//go:build linux

package sdnotify

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitLimit bounds how long one message may take to send: a send that
// waits for a manager that reads nothing takes forever.
const waitLimit = 5 * time.Second

// stalledManager is a manager socket nobody reads, and a sender to it.
// At the end of the test the manager's socket is closed first: a send
// that waits for room (a bug) then fails, so that the sender can be
// closed.
func stalledManager(t *testing.T) (string, *Sender) {
	t.Helper()
	mgr, s := fakeManager(t) // one that the test never reads
	return mgr.LocalAddr().String(), s
}

// within runs f, failing the test if it takes longer than waitLimit.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		require.FailNow(t, "a send waits for a manager that reads nothing", what)
	}
}

// TestSendNeverWaits (issue #18): a manager that reads nothing fills its
// queue; then a message is dropped at once with an error, not waited
// for, and a warning is due only once per WarnEvery.
func TestSendNeverWaits(t *testing.T) {
	path, s := stalledManager(t)
	var failed error
	for i := 0; i < 10000 && failed == nil; i++ {
		within(t, fmt.Sprintf("message %d", i), func() { failed = s.Send("WATCHDOG=1") })
	}
	require.Error(t, failed, "the queue of a manager that reads nothing fills up")
	assert.Contains(t, failed.Error(), path, "the error names the socket")
	assert.Contains(t, failed.Error(), "message dropped", "and says the message is lost")
	now := time.Now()
	lost, due := s.warnDue(now)
	assert.True(t, due, "the first failure is logged")
	assert.Equal(t, 1, lost, "one message was lost")
	assert.Error(t, s.Send("WATCHDOG=1"), "the queue is still full")
	_, due = s.warnDue(now.Add(time.Second))
	assert.False(t, due, "the next failure within WarnEvery is not logged")
	assert.Error(t, s.Send("WATCHDOG=1"), "the queue is still full")
	lost, due = s.warnDue(now.Add(WarnEvery))
	assert.True(t, due, "a failure after WarnEvery is logged again")
	assert.Equal(t, 2, lost, "with the messages lost since the last warning")
}

// TestNotifyWarnsOnce (issue #18): Notify to a manager that reads
// nothing never waits, warns of the first lost message, and not again
// within WarnEvery however many more are lost; those are counted.
func TestNotifyWarnsOnce(t *testing.T) {
	path, s := stalledManager(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for i := 0; i < 10000 && logs.Len() == 0; i++ {
		within(t, fmt.Sprintf("message %d", i), func() { s.Notify(log, "WATCHDOG=1") })
	}
	first := logs.String()
	require.NotEmpty(t, first, "the queue of a manager that reads nothing fills up, and that is logged")
	assert.Contains(t, first, "level=WARN", "as a warning")
	assert.Contains(t, first, WarnDropped, "that asks whether the manager reads")
	assert.Contains(t, first, path, "names the socket")
	assert.Contains(t, first, "lost=1", "and how many messages were lost")
	for range 100 {
		within(t, "a message to a full queue", func() { s.Notify(log, "WATCHDOG=1") })
	}
	assert.Equal(t, first, logs.String(), "no second warning within WarnEvery")
	assert.Equal(t, 100, s.lost, "the lost messages are counted")
}

// TestSendDelivers: a message reaches the manager as one datagram of
// newline-terminated lines, on a path and on an abstract socket.
func TestSendDelivers(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@tcpgrace-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()),
	} {
		m, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		require.NoError(t, err, "the manager listens on %s", name)
		s := NewSender(name)
		assert.True(t, s.Enabled(), "a sender to %s", name)
		assert.Equal(t, name, s.Socket(), "knows its socket")
		require.NoError(t, s.Send("READY=1", "STATUS=serving"), "a message to %s", name)
		buf := make([]byte, 4096)
		m.SetReadDeadline(time.Now().Add(waitLimit))
		n, err := m.Read(buf)
		require.NoError(t, err, "the manager reads the message")
		assert.Equal(t, "READY=1\nSTATUS=serving\n", string(buf[:n]), "one datagram of lines")
		require.NoError(t, s.Close(), "Close")
		require.NoError(t, s.Send("WATCHDOG=1"), "a message after Close opens a new socket")
		n, err = m.Read(buf)
		require.NoError(t, err, "the manager reads the message")
		assert.Equal(t, "WATCHDOG=1\n", string(buf[:n]), "the second message")
		s.Close()
		m.Close()
	}
}

// TestNilSenderSendsNothing: without NOTIFY_SOCKET, no message, no
// warning and no socket.
func TestNilSenderSendsNothing(t *testing.T) {
	s := NewSender("")
	assert.Nil(t, s, "no socket, no sender")
	assert.False(t, s.Enabled(), "a nil sender has no manager")
	assert.Empty(t, s.Socket(), "nor a socket")
	assert.NoError(t, s.Send("READY=1"), "a nil sender sends nothing")
	var logs bytes.Buffer
	s.Notify(slog.New(slog.NewTextHandler(&logs, nil)), "READY=1")
	assert.Empty(t, logs.String(), "and warns of nothing")
	assert.NoError(t, s.Close(), "Close of a nil sender")
}

// TestMessages: RELOADING=1 carries the status and the monotonic clock
// systemd 253 wants; EXTEND_TIMEOUT_USEC= is in µs.
func TestMessages(t *testing.T) {
	r := Reloading("upgrading to generation 2")
	require.Len(t, r, 3, "RELOADING=1, STATUS= and MONOTONIC_USEC=: %q", r)
	assert.Equal(t, []string{"RELOADING=1", "STATUS=upgrading to generation 2"}, r[:2], "the reload and its status")
	assert.True(t, strings.HasPrefix(r[2], "MONOTONIC_USEC="), "and the clock: %q", r[2])
	assert.Equal(t, "EXTEND_TIMEOUT_USEC=3000000", ExtendTimeout(3*time.Second), "3 s in µs")
}
