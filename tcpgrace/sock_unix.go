//go:build unix

package tcpgrace

import (
	"fmt"
	"os"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// dupSocket duplicates the socket behind c as a close-on-exec fd, without
// (*net.TCPListener).File, which would switch the shared socket to
// blocking mode.
func dupSocket(c syscall.Conn, name string) (int, error) {
	fd, err := sockfd.Dup(c, 0)
	if err != nil {
		return -1, fmt.Errorf("tcpgrace: duplicating %q: %w", name, err)
	}
	return fd, nil
}

// isOpen reports whether the socket behind c has not been closed.
func isOpen(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

// fileInode is the inode of f (0 if fstat fails): the identity of the
// readiness pipe in the hand-off.
func fileInode(f *os.File) uint64 {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
