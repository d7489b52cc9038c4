package quic

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// unixChannel is a forward channel: a Unix datagram socket bound in the
// abstract namespace as "@tcpgrace-quic/<service>/<tag>", with
// SO_PASSCRED, so that every datagram comes with its sender's credentials
// (filled in by the kernel; only a privileged sender can claim others).
type unixChannel struct {
	conn  *net.UnixConn
	raw   syscall.RawConn
	peers [256]*unix.SockaddrUnix // by tag
	uid   uint32
	oob   []byte // recv's, one reader
	nref  atomic.Uint64
}

// channelName is the abstract socket name of a generation's channel.
func channelName(service string, tag byte) string {
	return fmt.Sprintf("@tcpgrace-quic/%s/%d", service, tag)
}

// openChannel binds the channel of the generation tagged tag. It fails
// if the name is taken: another process of the service has that tag.
func openChannel(service string, tag byte) (channel, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: channelName(service, tag), Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("tcpgrace/quic: forward channel: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	})
	if err = errors.Join(err, serr); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tcpgrace/quic: forward channel: SO_PASSCRED: %w", err)
	}
	// Room for bursts: the senders' buffers hold what waits here (capped
	// by net.core.[rw]mem_max).
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	c := &unixChannel{conn: conn, raw: raw, uid: uint32(os.Getuid()),
		oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred))}
	for t := range c.peers {
		c.peers[t] = &unix.SockaddrUnix{Name: channelName(service, byte(t))}
	}
	return c, nil
}

func (c *unixChannel) send(tag byte, frame []byte) error {
	var err error
	cerr := c.raw.Write(func(fd uintptr) bool {
		err = unix.Sendto(int(fd), frame, unix.MSG_DONTWAIT, c.peers[tag])
		return true // never wait: a full channel drops, as UDP does
	})
	switch {
	case cerr != nil:
		return cerr
	case err == unix.ECONNREFUSED || err == unix.ENOENT:
		return errGone
	case err == unix.EAGAIN:
		return errFull
	}
	return err
}

func (c *unixChannel) recv(b []byte) (int, error) {
	for {
		n, oobn, _, _, err := c.conn.ReadMsgUnix(b, c.oob)
		if err != nil {
			return 0, err
		}
		if c.allowed(c.oob[:oobn]) {
			return n, nil
		}
		c.nref.Add(1)
	}
}

// allowed reports whether the credentials in oob are root's or ours.
func (c *unixChannel) allowed(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			return cred.Uid == 0 || cred.Uid == c.uid
		}
	}
	return false
}

func (c *unixChannel) refused() uint64 { return c.nref.Load() }

func (c *unixChannel) close() error { return c.conn.Close() }
