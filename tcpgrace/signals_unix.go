//go:build unix

package tcpgrace

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Default signal sets of [Server]; each is replaceable in the Server.
// SIGHUP reloads in place and SIGTERM/SIGINT stop, as in nginx; SIGUSR1
// starts the next generation (nginx's binary upgrade uses SIGUSR2, and
// tableflip's examples use SIGHUP for the upgrade itself: set
// Server.UpgradeSignals to match either, and register the signal with
// NotifySignals(syscall.SIGUSR2): unregistered, Go ignores SIGUSR2 and it
// never upgrades).
var (
	// defaultUpgradeSignals start the next generation.
	defaultUpgradeSignals = []os.Signal{syscall.SIGUSR1}
	// defaultStopSignals stop accepting, drain and return.
	defaultStopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	// defaultReloadSignals run Server.Reload in place.
	defaultReloadSignals = []os.Signal{syscall.SIGHUP}
)

// signalName is sig as an operator writes it (SIGUSR1, not "user defined
// signal 1"), for log lines.
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if name := unix.SignalName(s); name != "" {
			return name
		}
	}
	return sig.String()
}
