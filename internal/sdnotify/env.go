// Package sdnotify speaks sd_notify(3) to a service manager, for the
// library's generations and for `tcpgrace run` alike: it reads the
// manager's variables, sends messages without ever waiting, and logs lost
// ones at most every ten seconds.
//
// A message is one datagram of newline-separated KEY=VALUE lines, sent to
// the socket NOTIFY_SOCKET names. We write the few lines ourselves rather
// than depend on a library (go-systemd's daemon package does the same in
// about as many): the project's dependencies stay x/sys, go-multierror
// and testify. Without NOTIFY_SOCKET nothing is sent, and a process not
// started by a service manager behaves exactly as without this package.
//
// Who speaks when (the library's generations hand the main process on
// with MAINPID=, the supervisor speaks for itself) is the callers'
// policy; this package only knows the protocol.
package sdnotify

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// The service manager's variables (sd_notify(3), sd_watchdog_enabled(3)).
// [Take] reads them and removes them from the environment, so that
// processes the program spawns do not speak for it.
const (
	EnvNotifySocket = "NOTIFY_SOCKET" // a datagram socket: a path, or "@name" for an abstract one
	EnvWatchdogUsec = "WATCHDOG_USEC" // the watchdog interval in µs
	EnvWatchdogPID  = "WATCHDOG_PID"  // the pid WATCHDOG_USEC is meant for; unset: the process that reads it
)

// The bounds of WATCHDOG_USEC. systemd only asks for a positive number of
// µs (sd_watchdog_enabled(3)); the rest is ours. Below a millisecond the
// pings (at half the interval) would flood the manager, and no manager
// sets such a value on purpose: it is a mistake or a value that wrapped.
// Above the longest time.Duration the interval overflows. A value out of
// bounds, or not a number, is ignored with a warning: no pings, and no
// next process gets it either.
const (
	WatchdogMin     = time.Millisecond
	WatchdogMaxUsec = math.MaxInt64 / 1000 // about 292 years
)

// Env is what the service manager's variables say to one process.
type Env struct {
	// Socket is where to send, for [NewSender]; "" when no manager
	// listens, or one at a kind of address we do not speak (vsock).
	Socket string
	// Watchdog is the interval this process must ping WATCHDOG=1 within;
	// 0 for none, or when WATCHDOG_PID names another process.
	Watchdog time.Duration
	// Next is the variables a process started to take this one's place
	// needs to speak to the manager: NOTIFY_SOCKET and a valid
	// WATCHDOG_USEC, never WATCHDOG_PID (it names this process, and the
	// next one is the watchdog's once it is the main process).
	Next []string
	// Err is a variable ignored as malformed, for the caller to log.
	Err error
}

// Take reads the service manager's variables from the process environment
// for this process, and removes them from it.
func Take() Env {
	e := Parse(os.LookupEnv, os.Getpid())
	for _, k := range []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID} {
		os.Unsetenv(k)
	}
	return e
}

// Parse reads the service manager's variables through lookup (as
// os.LookupEnv reads them) for the process pid. WATCHDOG_PID, when set,
// must be pid exactly: an empty or malformed one is for no process, as
// sd_watchdog_enabled(3) reads it.
func Parse(lookup func(string) (string, bool), pid int) Env {
	var e Env
	sock, ok := lookup(EnvNotifySocket)
	if !ok || sock == "" || (sock[0] != '/' && sock[0] != '@') {
		return e // unset, or a kind of address we do not speak (vsock)
	}
	e.Socket = sock
	e.Next = []string{EnvNotifySocket + "=" + sock}
	usecStr, _ := lookup(EnvWatchdogUsec)
	watchdog, err := ParseWatchdog(usecStr)
	if err != nil || watchdog == 0 {
		e.Err = err
		return e
	}
	e.Next = append(e.Next, EnvWatchdogUsec+"="+usecStr)
	if p, ok := lookup(EnvWatchdogPID); ok && p != strconv.Itoa(pid) {
		return e // meant for another process; the next one may still be the one
	}
	e.Watchdog = watchdog
	return e
}

// ParseWatchdog reads WATCHDOG_USEC: 0 for unset or "0" (no watchdog), an
// error naming the variable and its value when it is not a number of µs
// between [WatchdogMin] and [WatchdogMaxUsec].
func ParseWatchdog(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	usec, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err == nil && usec == 0:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("%s=%q is not a number of µs; no watchdog pings", EnvWatchdogUsec, v)
	case usec > WatchdogMaxUsec:
		return 0, fmt.Errorf("%s=%s is more µs than a time.Duration holds (%d, about 292 years); no watchdog pings",
			EnvWatchdogUsec, v, uint64(WatchdogMaxUsec))
	case time.Duration(usec)*time.Microsecond < WatchdogMin:
		return 0, fmt.Errorf("%s=%s is below the minimum of %v; no watchdog pings",
			EnvWatchdogUsec, v, WatchdogMin)
	}
	return time.Duration(usec) * time.Microsecond, nil
}
