// Package bind binds new listening sockets for the library's registry and
// for tcpgrace run: a stream listener or a packet conn for a network and
// address, a Unix socket file given its mode before listen(2), a stale
// socket file (nobody listening) replaced, a live one refused with an
// error wrapping syscall.EADDRINUSE.
//
// It also identifies a bound socket file by device and inode ([File]), so
// that whoever releases the socket removes the file only while its path
// still leads to it.
package bind

import (
	"context"
	"errors"
	"io/fs"
	"net"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// ErrNotSupported is returned for a Unix socket where there are none.
var ErrNotSupported = errors.New("unix sockets are not supported on this platform")

// File is a socket file by path, device and inode, so that releasing it
// never removes a file that someone else put there since.
type File struct {
	Path string
	ID   sockfd.FileID
}

// Listen binds a new stream listener for network (tcp, tcp4, tcp6 or
// unix) at address. A Unix socket file gets mode before it accepts, and
// is returned as the File to remove when the socket is released (nil for
// an abstract socket, and for the other networks).
func Listen(network, address string, mode fs.FileMode) (net.Listener, *File, error) {
	if network == "unix" {
		ln, f, err := listenUnix(address, mode)
		if err != nil {
			return nil, nil, err
		}
		return ln, f, nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), network, address)
	return ln, nil, err
}

// ListenPacket binds a new packet conn for network (udp, udp4 or udp6) at
// address.
func ListenPacket(network, address string) (net.PacketConn, error) {
	var lc net.ListenConfig
	return lc.ListenPacket(context.Background(), network, address)
}
