package tcpgrace

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The service manager's variables (sd_notify(3), sd_watchdog_enabled(3)).
// [New] reads them and removes them from the environment, so that
// processes the program spawns do not speak for it; each next generation
// gets them back (WATCHDOG_PID left out: it is meant for the process
// systemd started, and an unset WATCHDOG_PID means "this process").
const (
	envNotifySocket = "NOTIFY_SOCKET" // a datagram socket: a path, or "@name" for an abstract one
	envWatchdogUsec = "WATCHDOG_USEC" // the watchdog interval in µs
	envWatchdogPID  = "WATCHDOG_PID"  // the pid WATCHDOG_USEC is meant for
)

// sdExtendStep is how far ahead each EXTEND_TIMEOUT_USEC pushes the
// service manager's timeout while an upgrade or a drain runs; it is sent
// every sdExtendStep/3, so one lost or late message costs nothing.
const sdExtendStep = 3 * time.Second

// The bounds of WATCHDOG_USEC. systemd only asks for a positive number of
// µs (sd_watchdog_enabled(3)); the rest is ours. Below a millisecond the
// pings (at half the interval) would flood the manager, and no manager
// sets such a value on purpose: it is a mistake or a value that wrapped.
// Above the longest time.Duration the interval overflows. A value out of
// bounds, or not a number, is ignored with a warning: no pings, and the
// next generation does not get it either.
const (
	sdWatchdogMin     = time.Millisecond
	sdWatchdogMaxUsec = math.MaxInt64 / 1000 // about 292 years
)

// sdWarnEvery is how often at most a failed notification is logged: a
// manager that reads nothing would otherwise get a warning for every
// watchdog ping.
const sdWarnEvery = 10 * time.Second

// sdNotifier speaks sd_notify(3) to the service manager: one datagram per
// message, newline-separated KEY=VALUE lines. We write the dozen lines
// ourselves rather than depend on a library (go-systemd's daemon package
// does the same in about as many): the project's dependencies stay x/sys,
// go-multierror and testify. A nil *sdNotifier, or one without a socket,
// sends nothing: a process not started by a service manager behaves
// exactly as before.
type sdNotifier struct {
	addr     *net.UnixAddr // nil: no service manager listens
	env      []string      // the variables handed to the next generation
	watchdog time.Duration // 0: no watchdog for this process
	envErr   error         // a variable ignored as malformed, for New to log

	mu     sync.Mutex
	conn   *net.UnixConn // opened at the first message
	lost   int           // messages dropped since the last warning
	warned time.Time     // when the last warning was due; zero: never
}

// lookupFunc reads one variable, as os.LookupEnv does.
type lookupFunc func(string) (string, bool)

// sdTakeOnce guards the process environment's service manager
// variables: they are consumed by the first Upgrader.
var sdTakeOnce sync.Once

// takeNotify reads the service manager's variables from the process
// environment and removes them from it; only the first call in a process
// gets them.
func takeNotify() *sdNotifier {
	n := &sdNotifier{}
	sdTakeOnce.Do(func() {
		n = parseNotify(os.LookupEnv, os.Getpid())
		for _, k := range []string{envNotifySocket, envWatchdogUsec, envWatchdogPID} {
			os.Unsetenv(k)
		}
	})
	return n
}

// parseNotify builds a notifier from an environment, for the process pid.
func parseNotify(lookup lookupFunc, pid int) *sdNotifier {
	n := &sdNotifier{}
	sock, ok := lookup(envNotifySocket)
	if !ok || sock == "" || (sock[0] != '/' && sock[0] != '@') {
		return n // unset, or a kind of address we do not speak (vsock)
	}
	n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"} // Go maps a leading '@' to the abstract namespace
	n.env = []string{envNotifySocket + "=" + sock}
	usecStr, _ := lookup(envWatchdogUsec)
	watchdog, err := parseWatchdog(usecStr)
	if err != nil || watchdog == 0 {
		n.envErr = err
		return n
	}
	n.env = append(n.env, envWatchdogUsec+"="+usecStr)
	if p, ok := lookup(envWatchdogPID); ok && p != strconv.Itoa(pid) {
		return n // meant for another process; our next generation may still be the one
	}
	n.watchdog = watchdog
	return n
}

// parseWatchdog reads WATCHDOG_USEC: 0 for unset or "0" (no watchdog), an
// error naming the variable and its value when it is not a number of µs
// between sdWatchdogMin and sdWatchdogMaxUsec.
func parseWatchdog(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	usec, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err == nil && usec == 0:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("tcpgrace: %s=%q is not a number of µs; no watchdog pings", envWatchdogUsec, v)
	case usec > sdWatchdogMaxUsec:
		return 0, fmt.Errorf("tcpgrace: %s=%s is more µs than a time.Duration holds (%d, about 292 years); no watchdog pings",
			envWatchdogUsec, v, uint64(sdWatchdogMaxUsec))
	case time.Duration(usec)*time.Microsecond < sdWatchdogMin:
		return 0, fmt.Errorf("tcpgrace: %s=%s is below the minimum of %v; no watchdog pings",
			envWatchdogUsec, v, sdWatchdogMin)
	}
	return time.Duration(usec) * time.Microsecond, nil
}

// enabled reports whether a service manager listens.
func (n *sdNotifier) enabled() bool { return n != nil && n.addr != nil }

// childEnv is what the next generation needs to speak to the manager.
func (n *sdNotifier) childEnv() []string {
	if n == nil {
		return nil
	}
	return n.env
}

// send writes one message of KEY=VALUE lines. It never waits: a manager
// whose queue is full (it reads nothing) loses the message, and send
// returns the error; see [sdNotifier.warnDue]. Without a manager it does
// nothing and returns nil.
func (n *sdNotifier) send(lines ...string) error {
	if !n.enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // unbound, CLOEXEC
		if err != nil {
			return fmt.Errorf("tcpgrace: sd_notify socket: %w", err)
		}
		n.conn = c
	}
	msg := strings.Join(lines, "\n") + "\n"
	if err := sendNow(n.conn, []byte(msg), n.addr); err != nil {
		n.lost++
		return fmt.Errorf("tcpgrace: sd_notify to %s (message dropped): %w", n.addr.Name, err)
	}
	return nil
}

// warnDue reports whether a failed send should be logged now: the first
// failure, then at most one every sdWarnEvery. lost is how many messages
// were dropped since the last warning, this one included.
func (n *sdNotifier) warnDue(now time.Time) (lost int, due bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.warned.IsZero() && now.Sub(n.warned) < sdWarnEvery {
		return 0, false
	}
	lost, n.lost, n.warned = n.lost, 0, now
	return lost, true
}

// reloading is the message that starts an upgrade: systemd 253 and later
// want the monotonic clock with RELOADING=1.
func reloading(status string) []string {
	lines := []string{"RELOADING=1", "STATUS=" + status}
	if usec, ok := monotonicUsec(); ok {
		lines = append(lines, "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
	}
	return lines
}

// extendTimeout is the EXTEND_TIMEOUT_USEC line for d from now.
func extendTimeout(d time.Duration) string {
	return "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10)
}
