//go:build !unix

package tcpgrace

import (
	"os"
	"syscall"
)

func dupSocket(c syscall.Conn, name string) (int, error) { return -1, ErrNotSupported }

func isOpen(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

func fileInode(f *os.File) uint64 { return 0 }
