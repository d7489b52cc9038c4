//go:build unix

package tcpgrace

import (
	"os"
	"syscall"
)

// Default signal sets of [Server]; each is replaceable in the Server.
// SIGHUP reloads in place and SIGTERM/SIGINT stop, as in nginx; SIGUSR1
// starts the next generation (nginx's binary upgrade uses SIGUSR2, and
// tableflip's examples use SIGHUP for the upgrade itself: set
// Server.UpgradeSignals to match either, and register the signal with
// NotifySignals(syscall.SIGUSR2): unregistered, SIGUSR2 kills the process).
var (
	// DefaultUpgradeSignals start the next generation.
	DefaultUpgradeSignals = []os.Signal{syscall.SIGUSR1}
	// DefaultStopSignals stop accepting, drain and return.
	DefaultStopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	// DefaultReloadSignals run Server.Reload in place.
	DefaultReloadSignals = []os.Signal{syscall.SIGHUP}
)
