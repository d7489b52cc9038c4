//go:build unix && !linux

package wire

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// maker makes inherited sockets listeners and packet conns, each from an
// *os.File of a duplicate of its inherited fd.
type maker struct{}

// make makes en's socket. The fd inherited stays open.
func (maker) make(en Entry) (socket, error) {
	fd, err := unix.Dup(en.FD)
	if err != nil {
		return socket{}, os.NewSyscallError("dup", err)
	}
	unix.CloseOnExec(fd)
	file := os.NewFile(uintptr(fd), "fd "+strconv.Itoa(en.FD))
	defer file.Close()
	return fileSocket(file, en.Network)
}

func (maker) close() {}

// closeInherited closes the fds inherited once net holds its duplicates.
func closeInherited(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
