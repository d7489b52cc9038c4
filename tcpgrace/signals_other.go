//go:build !unix

package tcpgrace

import "os"

// Default signal sets of [Server]: only an interrupt exists here, and it
// stops the server.
var (
	defaultUpgradeSignals []os.Signal
	defaultStopSignals    = []os.Signal{os.Interrupt}
	defaultReloadSignals  []os.Signal
)

// signalName is sig as the platform names it, for log lines.
func signalName(sig os.Signal) string { return sig.String() }
