//go:build !linux

package tcpgrace

import (
	"net"
	"os"
)

// unreadBytes cannot tell here: a connection is idle by its state alone.
func unreadBytes(c net.Conn) int { return 0 }

// pipeUnread cannot tell here: a cancel before the child's word is read
// kills it.
func pipeUnread(f *os.File) bool { return false }

// awaitReadable does not wait here (false): the reader's Read does.
func awaitReadable(f *os.File) bool { return false }
