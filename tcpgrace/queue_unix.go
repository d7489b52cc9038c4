//go:build unix

package tcpgrace

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// queued reports whether connections wait in the accept queue of ln, a
// listening socket: it polls readable. It is false when it cannot tell
// (ln is closed, or is no syscall.Conn).
func queued(ln any) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		for errors.Is(err, unix.EINTR) {
			n, err = unix.Poll(fds, 0)
		}
		ready = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	})
	return ready
}
