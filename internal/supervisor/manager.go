//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The variables of a service manager above the supervisor (sd_notify(3)).
const (
	envNotifySocket = "NOTIFY_SOCKET" // where to send; a path, or "@name" for an abstract socket
	envWatchdogUsec = "WATCHDOG_USEC" // the watchdog interval in µs
	envWatchdogPID  = "WATCHDOG_PID"  // the pid WATCHDOG_USEC is meant for
)

// The bounds of WATCHDOG_USEC, as the library keeps them: below a
// millisecond the pings would flood the manager (no manager sets such a
// value on purpose: it is a mistake or a value that wrapped), above the
// longest time.Duration the interval overflows. A value out of bounds is
// ignored with a warning: no pings.
const (
	watchdogMin     = time.Millisecond
	watchdogMaxUsec = math.MaxInt64 / 1000 // about 292 years
)

// warnEvery is how often at most a failed notification is logged: a
// manager that reads nothing would otherwise get a warning for every
// watchdog ping.
const warnEvery = 10 * time.Second

// manager speaks sd_notify(3) to a service manager above the supervisor,
// if there is one: READY=1 with MAINPID= of the supervisor itself (it is
// the stable pid) once the first instance is ready, STATUS= as instances
// come and go, STOPPING=1, and WATCHDOG=1 while the loop runs. The
// library has its own sender, which its Upgrader would use for a
// generation's life; the supervisor's life is another one, so it takes
// the variables before the library can and speaks for itself. A nil
// address sends nothing. A message never waits: the supervisor's loop
// must not stall behind a manager that reads nothing.
type manager struct {
	addr     *net.UnixAddr
	conn     *net.UnixConn
	watchdog time.Duration
	ready    bool // READY=1 was sent (by this image or an earlier one)

	lost   int       // messages dropped since the last warning
	warned time.Time // when the last warning was due; zero: never
}

// takeManager reads the variables and removes them from the environment;
// a WATCHDOG_USEC it ignores is logged to log.
func takeManager(log *slog.Logger) *manager {
	m := &manager{}
	sock := os.Getenv(envNotifySocket)
	if sock != "" && (sock[0] == '/' || sock[0] == '@') {
		m.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
		watchdog, err := parseWatchdog(os.Getenv(envWatchdogUsec))
		if err != nil {
			log.Warn("sd_notify", "err", err)
		}
		pid := os.Getenv(envWatchdogPID)
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			m.watchdog = watchdog
		}
	}
	for _, k := range []string{envNotifySocket, envWatchdogUsec, envWatchdogPID} {
		os.Unsetenv(k)
	}
	return m
}

// parseWatchdog reads WATCHDOG_USEC: 0 for unset or "0" (no watchdog), an
// error naming the variable and its value when it is not a number of µs
// between watchdogMin and watchdogMaxUsec.
func parseWatchdog(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	usec, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err == nil && usec == 0:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("tcpgrace run: %s=%q is not a number of µs; no watchdog pings", envWatchdogUsec, v)
	case usec > watchdogMaxUsec:
		return 0, fmt.Errorf("tcpgrace run: %s=%s is more µs than a time.Duration holds (%d, about 292 years); no watchdog pings",
			envWatchdogUsec, v, uint64(watchdogMaxUsec))
	case time.Duration(usec)*time.Microsecond < watchdogMin:
		return 0, fmt.Errorf("tcpgrace run: %s=%s is below the minimum of %v; no watchdog pings",
			envWatchdogUsec, v, watchdogMin)
	}
	return time.Duration(usec) * time.Microsecond, nil
}

// socket is the manager's address, "" without one.
func (m *manager) socket() string {
	if m.addr == nil {
		return ""
	}
	return m.addr.Name
}

// send writes one message; without a manager it does nothing. It never
// waits: when the manager's queue is full (it reads nothing) the message
// is dropped and an error returned, but only when a warning is due (the
// first failure, then at most one every warnEvery, saying how many were
// lost), so that a stalled manager cannot flood the log.
func (m *manager) send(lines ...string) error {
	if m.addr == nil {
		return nil
	}
	if m.conn == nil {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("sd_notify socket: %w", err)
		}
		m.conn = c
	}
	err := sendNow(m.conn, []byte(strings.Join(lines, "\n")+"\n"), m.addr)
	if err == nil {
		return nil
	}
	m.lost++
	now := time.Now()
	if !m.warned.IsZero() && now.Sub(m.warned) < warnEvery {
		return nil
	}
	lost := m.lost
	m.lost, m.warned = 0, now
	return fmt.Errorf("sd_notify to %s: %w (%d messages dropped since the last warning; is the manager reading?)",
		m.addr.Name, err, lost)
}

// sendNow sends one datagram from c to addr without waiting: when the
// receiver's queue is full it fails with EAGAIN at once. (WriteToUnix
// would wait for room, forever for a receiver that reads nothing.)
func sendNow(c *net.UnixConn, msg []byte, addr *net.UnixAddr) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	sa := &unix.SockaddrUnix{Name: addr.Name} // a leading '@' names an abstract socket
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), msg, unix.MSG_DONTWAIT, sa)
		return true // one attempt: never wait for the socket to be writable
	})
	if err != nil {
		return err
	}
	return sendErr
}
