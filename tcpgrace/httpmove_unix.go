//go:build unix

package tcpgrace

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitReadable waits until the socket has bytes (or end of file, or an
// error) to read, without reading them, or its read deadline passes.
func waitReadable(raw syscall.RawConn) {
	var one [1]byte
	raw.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)
	})
}

// dupConn duplicates a connection's fd (close-on-exec) for the hand-off.
func dupConn(raw syscall.RawConn) (*os.File, error) {
	var dup int
	var derr error
	if err := raw.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return os.NewFile(uintptr(dup), "tcpgrace-conn"), nil
}
