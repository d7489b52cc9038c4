//go:build linux

package supervisor

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
		{"18446744073709551616", 0, `WATCHDOG_USEC="18446744073709551616" is not a number`},
		{"999", 0, "WATCHDOG_USEC=999 is below the minimum of 1ms"},
		{"-5", 0, `WATCHDOG_USEC="-5" is not a number`},
		{"soon", 0, `WATCHDOG_USEC="soon" is not a number`},
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

// TestTakeManagerWatchdog: takeManager keeps a valid interval meant for
// this process, and logs one it ignores.
func TestTakeManagerWatchdog(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		warning   string
	}{
		{"2000000", "", 2 * time.Second, ""},
		{"2000000", strconv.Itoa(os.Getpid()), 2 * time.Second, ""},
		{"2000000", "1", 0, ""},
		{"18446744073709552", "", 0, "WATCHDOG_USEC=18446744073709552"},
	} {
		t.Setenv(envNotifySocket, "/run/notify")
		t.Setenv(envWatchdogUsec, tc.usec)
		t.Setenv(envWatchdogPID, tc.pid)
		var logs bytes.Buffer
		m := takeManager(slog.New(slog.NewTextHandler(&logs, nil)))
		assert.Equal(t, tc.want, m.watchdog, "WATCHDOG_USEC=%s WATCHDOG_PID=%s", tc.usec, tc.pid)
		if tc.warning == "" {
			assert.Empty(t, logs.String(), "nothing to warn of")
		} else {
			assert.Contains(t, logs.String(), tc.warning, "the warning names the variable and its value")
		}
		_, ok := os.LookupEnv(envWatchdogUsec)
		assert.False(t, ok, "the variable is taken out of the environment")
	}
}

// TestManagerNeverWaits (issue #18): a manager that reads nothing fills
// its queue; then a message is dropped at once, not waited for, and an
// error (for a warning) is returned only once per warnEvery.
func TestManagerNeverWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stalled")
	stalled, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err, "a manager socket nobody reads")
	defer stalled.Close()
	m := &manager{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
	defer func() { m.conn.Close() }()
	var failed error
	for i := 0; i < 10000 && failed == nil; i++ {
		done := make(chan error, 1)
		go func() { done <- m.send("WATCHDOG=1") }()
		select {
		case failed = <-done:
		case <-time.After(5 * time.Second):
			require.FailNow(t, "send waits for a manager that reads nothing", "message %d", i)
		}
	}
	require.Error(t, failed, "the queue of a manager that reads nothing fills up")
	assert.Contains(t, failed.Error(), path, "the error names the socket")
	assert.Contains(t, failed.Error(), "1 messages dropped", "and how many messages were lost")
	for range 100 {
		assert.NoError(t, m.send("WATCHDOG=1"), "no second warning within warnEvery")
	}
	assert.Equal(t, 100, m.lost, "the lost messages are counted")
}
