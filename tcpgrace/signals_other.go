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
