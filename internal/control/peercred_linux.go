package control

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// PeerCred is the pid and uid of the process at the other end of a Unix
// stream connection (SO_PEERCRED): for an accepted connection the
// client's, for a dialled one the listener's.
func PeerCred(c net.Conn) (pid int, uid uint32, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0, fmt.Errorf("control: %T is no Unix socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if cerr != nil {
		return 0, 0, fmt.Errorf("control: SO_PEERCRED: %w", cerr)
	}
	return int(cred.Pid), cred.Uid, nil
}

// PeerGone reports whether the client at the other end of the accepted
// Unix stream connection c has closed it (both directions shut down:
// POLLHUP), without waiting and without reading. A client that only shut
// down its writing half still waits for the reply and is not gone. A
// server checks it before it carries out a request that was read long
// after it was sent (the server was stopped meanwhile, say), so that a
// request whose requester gave up is never carried out.
func PeerGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n == 1 {
			gone = fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
