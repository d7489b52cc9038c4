//go:build !unix

package tcpgrace

import "os"

// Default signal sets of [Server]: only an interrupt exists here, and it
// stops the server.
var (
	DefaultUpgradeSignals []os.Signal
	DefaultStopSignals    = []os.Signal{os.Interrupt}
	DefaultReloadSignals  []os.Signal
)
