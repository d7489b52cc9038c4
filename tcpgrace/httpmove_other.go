//go:build !unix

package tcpgrace

import (
	"os"
	"syscall"
)

// waitReadable returns at once: connections do not move off Unix (the
// channel needs Unix sockets), so nothing parks for long.
func waitReadable(raw syscall.RawConn) {}

func dupConn(raw syscall.RawConn) (*os.File, error) { return nil, ErrNotSupported }
