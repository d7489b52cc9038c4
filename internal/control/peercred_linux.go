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
