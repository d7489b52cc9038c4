//go:build !linux

package control

import (
	"errors"
	"net"
)

// PeerCred needs SO_PEERCRED, which is Linux's.
func PeerCred(c net.Conn) (pid int, uid uint32, err error) {
	return 0, 0, errors.New("control: SO_PEERCRED is not supported on this platform")
}

// PeerGone needs poll's POLLHUP on a Unix socket as Linux reports it;
// elsewhere it reports false.
func PeerGone(c net.Conn) bool { return false }
