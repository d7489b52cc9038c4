package tcpgrace

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// unreadBytes is how many bytes wait in the receive queue of c's socket
// (SIOCINQ), looking through wrappers such as *tls.Conn; 0 when it
// cannot tell.
func unreadBytes(c net.Conn) int {
	for {
		inner, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = inner.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	return inq(sc)
}

// pipeUnread reports whether the pipe f reads from holds bytes not read
// yet.
func pipeUnread(f *os.File) bool { return inq(f) > 0 }

// awaitReadable returns once a read of f would not block (bytes, or the
// writer's end), or f is closed, without reading; true if it waited so.
func awaitReadable(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != unix.EINTR && (err != nil || n > 0)
	})
	return err == nil
}

// inq is how many bytes wait to be read on c's fd: SIOCINQ for a
// socket, which is FIONREAD, as for a pipe; 0 when it cannot tell.
func inq(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}
