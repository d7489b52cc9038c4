package tcpgrace

import (
	"fmt"
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

	mu   sync.Mutex
	conn *net.UnixConn // opened at the first message
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
	usec, err := strconv.ParseUint(usecStr, 10, 63)
	if err != nil || usec == 0 {
		return n
	}
	n.env = append(n.env, envWatchdogUsec+"="+usecStr)
	if p, ok := lookup(envWatchdogPID); ok && p != strconv.Itoa(pid) {
		return n // meant for another process; our next generation may still be the one
	}
	n.watchdog = time.Duration(usec) * time.Microsecond
	return n
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

// send writes one message of KEY=VALUE lines. Without a manager it does
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
	if _, err := n.conn.WriteToUnix([]byte(msg), n.addr); err != nil {
		return fmt.Errorf("tcpgrace: sd_notify to %s: %w", n.addr.Name, err)
	}
	return nil
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
