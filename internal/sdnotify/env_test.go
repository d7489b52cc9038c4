package sdnotify

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestParse: which environments mean a manager listens, whether the
// watchdog is meant for this process, and what the next process gets.
func TestParse(t *testing.T) {
	pid := 4242
	for _, tc := range []struct {
		name     string
		env      map[string]string
		socket   string
		watchdog time.Duration
		next     []string
		err      string // "" for none
	}{
		{"nothing", nil, "", 0, nil, ""},
		{"empty socket", map[string]string{EnvNotifySocket: ""}, "", 0, nil, ""},
		{"vsock is not spoken", map[string]string{EnvNotifySocket: "vsock:2:1"}, "", 0, nil, ""},
		{"path", map[string]string{EnvNotifySocket: "/run/systemd/notify"}, "/run/systemd/notify", 0,
			[]string{"NOTIFY_SOCKET=/run/systemd/notify"}, ""},
		{"abstract", map[string]string{EnvNotifySocket: "@sd"}, "@sd", 0, []string{"NOTIFY_SOCKET=@sd"}, ""},
		{"watchdog for us", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "2000000", EnvWatchdogPID: "4242"},
			"/n", 2 * time.Second, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=2000000"}, ""},
		{"watchdog without a pid is ours", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "5000"},
			"/n", 5 * time.Millisecond, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=5000"}, ""},
		{"watchdog that wrapped", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "18446744073709552"},
			"/n", 0, []string{"NOTIFY_SOCKET=/n"}, "WATCHDOG_USEC=18446744073709552 is more µs"},
		{"watchdog below the minimum", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "500"},
			"/n", 0, []string{"NOTIFY_SOCKET=/n"}, "WATCHDOG_USEC=500 is below the minimum"},
		{"watchdog for another pid", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "2000000", EnvWatchdogPID: "1"},
			"/n", 0, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=2000000"}, ""},
		{"watchdog for an empty pid is no one's", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "2000000", EnvWatchdogPID: ""},
			"/n", 0, []string{"NOTIFY_SOCKET=/n", "WATCHDOG_USEC=2000000"}, ""},
		{"malformed watchdog", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "soon"},
			"/n", 0, []string{"NOTIFY_SOCKET=/n"}, `WATCHDOG_USEC="soon" is not a number`},
		{"zero watchdog", map[string]string{EnvNotifySocket: "/n", EnvWatchdogUsec: "0"},
			"/n", 0, []string{"NOTIFY_SOCKET=/n"}, ""},
		{"a watchdog without a socket is not read", map[string]string{EnvWatchdogUsec: "soon"}, "", 0, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Parse(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, pid)
			assert.Equal(t, tc.socket, e.Socket, "where a manager listens")
			assert.Equal(t, tc.watchdog, e.Watchdog, "the watchdog interval")
			assert.Equal(t, tc.next, e.Next, "what the next process gets")
			if tc.err == "" {
				assert.NoError(t, e.Err, "no variable ignored")
			} else if assert.Error(t, e.Err, "a variable ignored") {
				assert.Contains(t, e.Err.Error(), tc.err, "the error names the variable and its value")
			}
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
		got, err := ParseWatchdog(tc.value)
		assert.Equal(t, tc.want, got, "the interval for %q", tc.value)
		if tc.err == "" {
			assert.NoError(t, err, "%q is a valid interval", tc.value)
		} else if assert.Error(t, err, "%q is refused", tc.value) {
			assert.Contains(t, err.Error(), tc.err, "the error names the variable and the value")
			assert.Contains(t, err.Error(), "no watchdog pings", "and what follows")
		}
	}
}

// FuzzParseWatchdog: any value is either refused or an interval within
// the bounds (0 only for no watchdog).
func FuzzParseWatchdog(f *testing.F) {
	for _, v := range []string{"", "0", "999", "1000", "9223372036854775", "18446744073709552", "-5", "soon"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := ParseWatchdog(v)
		switch {
		case err != nil:
			assert.Zero(t, d, "a refused %q gives no interval", v)
		case d == 0:
			usec, perr := strconv.ParseUint(v, 10, 64)
			assert.True(t, v == "" || (perr == nil && usec == 0), "only an unset or zero value means no watchdog, not %q", v)
		default:
			assert.GreaterOrEqual(t, d, WatchdogMin, "%q is within the bounds", v)
		}
	})
}

// TestTake: Take reads the variables for this process and removes them
// from the environment, so that processes spawned later do not inherit
// them.
func TestTake(t *testing.T) {
	t.Setenv(EnvNotifySocket, "@tcpgrace-test")
	t.Setenv(EnvWatchdogUsec, "1000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	e := Take()
	assert.Equal(t, "@tcpgrace-test", e.Socket, "the socket")
	assert.Equal(t, time.Second, e.Watchdog, "the watchdog, meant for this process")
	assert.Equal(t, []string{"NOTIFY_SOCKET=@tcpgrace-test", "WATCHDOG_USEC=1000000"}, e.Next, "WATCHDOG_PID is not handed on")
	for _, k := range []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID} {
		_, ok := os.LookupEnv(k)
		assert.False(t, ok, "%s is gone from the environment", k)
	}
	assert.Equal(t, Env{}, Take(), "a second Take finds nothing")
}
