//go:build linux

package supervisor

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
)

// TestTakeManagerWatchdog: takeManager keeps a valid interval meant for
// this process, and logs one it ignores. (The variables' parsing and the
// sender are tested in package sdnotify.)
func TestTakeManagerWatchdog(t *testing.T) {
	const unset = "(unset)"
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		warning   string
	}{
		{"2000000", unset, 2 * time.Second, ""},
		{"2000000", strconv.Itoa(os.Getpid()), 2 * time.Second, ""},
		{"2000000", "1", 0, ""},
		{"2000000", "", 0, ""}, // set but empty: meant for no process, as sd_watchdog_enabled(3) reads it
		{"18446744073709552", unset, 0, "tcpgrace run: WATCHDOG_USEC=18446744073709552"},
	} {
		t.Setenv(sdnotify.EnvNotifySocket, "/run/notify")
		t.Setenv(sdnotify.EnvWatchdogUsec, tc.usec)
		t.Setenv(sdnotify.EnvWatchdogPID, tc.pid)
		if tc.pid == unset {
			os.Unsetenv(sdnotify.EnvWatchdogPID) // t.Setenv restores it
		}
		var logs bytes.Buffer
		m := takeManager(slog.New(slog.NewTextHandler(&logs, nil)))
		assert.Equal(t, "/run/notify", m.Socket(), "the manager's socket")
		assert.Equal(t, tc.want, m.watchdog, "WATCHDOG_USEC=%s WATCHDOG_PID=%s", tc.usec, tc.pid)
		if tc.warning == "" {
			assert.Empty(t, logs.String(), "nothing to warn of")
		} else {
			assert.Contains(t, logs.String(), "level=WARN msg=sd_notify ", "a warning")
			assert.Contains(t, logs.String(), tc.warning, "that names the variable and its value")
		}
		for _, k := range []string{sdnotify.EnvNotifySocket, sdnotify.EnvWatchdogUsec, sdnotify.EnvWatchdogPID} {
			_, ok := os.LookupEnv(k)
			assert.False(t, ok, "%s is taken out of the environment", k)
		}
	}
}

// TestManagerWithoutSocket: without NOTIFY_SOCKET the supervisor has no
// manager above it and sends nothing.
func TestManagerWithoutSocket(t *testing.T) {
	t.Setenv(sdnotify.EnvNotifySocket, "")
	t.Setenv(sdnotify.EnvWatchdogUsec, "2000000")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	m := takeManager(log)
	assert.False(t, m.Enabled(), "no manager above")
	assert.Zero(t, m.watchdog, "and no watchdog")
	m.Notify(log, "READY=1") // sends nothing
	assert.Empty(t, logs.String(), "nothing to warn of")
}
