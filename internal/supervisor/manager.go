//go:build linux

package supervisor

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The variables of a service manager above the supervisor (sd_notify(3)).
const (
	envNotifySocket = "NOTIFY_SOCKET" // where to send; a path, or "@name" for an abstract socket
	envWatchdogUsec = "WATCHDOG_USEC" // the watchdog interval in µs
	envWatchdogPID  = "WATCHDOG_PID"  // the pid WATCHDOG_USEC is meant for
)

// manager speaks sd_notify(3) to a service manager above the supervisor,
// if there is one: READY=1 with MAINPID= of the supervisor itself (it is
// the stable pid) once the first instance is ready, STATUS= as instances
// come and go, STOPPING=1, and WATCHDOG=1 while the loop runs. The
// library has its own sender, which its Upgrader would use for a
// generation's life; the supervisor's life is another one, so it takes
// the variables before the library can and speaks for itself. A nil
// address sends nothing.
type manager struct {
	addr     *net.UnixAddr
	conn     *net.UnixConn
	watchdog time.Duration
	ready    bool // READY=1 was sent (by this image or an earlier one)
}

// takeManager reads the variables and removes them from the environment.
func takeManager() *manager {
	m := &manager{}
	sock := os.Getenv(envNotifySocket)
	if sock != "" && (sock[0] == '/' || sock[0] == '@') {
		m.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
		usec, err := strconv.ParseInt(os.Getenv(envWatchdogUsec), 10, 64)
		pid := os.Getenv(envWatchdogPID)
		if err == nil && usec > 0 && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
			m.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	for _, k := range []string{envNotifySocket, envWatchdogUsec, envWatchdogPID} {
		os.Unsetenv(k)
	}
	return m
}

// socket is the manager's address, "" without one.
func (m *manager) socket() string {
	if m.addr == nil {
		return ""
	}
	return m.addr.Name
}

// send writes one message; without a manager it does nothing.
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
	if _, err := m.conn.WriteToUnix([]byte(strings.Join(lines, "\n")+"\n"), m.addr); err != nil {
		return fmt.Errorf("sd_notify to %s: %w", m.addr.Name, err)
	}
	return nil
}
