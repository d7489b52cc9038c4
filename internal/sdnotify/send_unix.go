//go:build unix

package sdnotify

import (
	"net"

	"golang.org/x/sys/unix"
)

// sendNow sends one datagram from c to addr without waiting: when the
// receiver's queue is full it fails with EAGAIN at once. (WriteToUnix
// would wait for room, forever for a receiver that reads nothing.)
func sendNow(c *net.UnixConn, msg []byte, addr *net.UnixAddr) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	sa := &unix.SockaddrUnix{Name: addr.Name} // a leading '@' names an abstract socket
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), msg, unix.MSG_DONTWAIT, sa)
		return true // one attempt: never wait for the socket to be writable
	})
	if err != nil {
		return err
	}
	return sendErr
}
