//go:build !unix

package tcpgrace

import (
	"io/fs"
	"net"
	"os"
	"syscall"
)

func dupSocket(c syscall.Conn, name string) (*os.File, error) { return nil, ErrNotSupported }

func isOpen(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

func statUnixPath(path string) *unixPath { return nil }

func (p *unixPath) remove() bool { return false }

func fileInode(f *os.File) uint64 { return 0 }

func listenUnix(path string, mode fs.FileMode) (*net.UnixListener, *unixPath, error) {
	return nil, nil, ErrNotSupported
}
