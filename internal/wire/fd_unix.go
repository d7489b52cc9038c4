//go:build unix

package wire

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// checkPipe makes sure fd is an open pipe, makes it close-on-exec and
// returns its inode.
func checkPipe(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, describeErrno(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return 0, errors.New("not a pipe")
	}
	unix.CloseOnExec(fd)
	return uint64(st.Ino), nil
}

// probePipe is Take's [pipeProbe]: same reports whether fd is open for
// writing on the pipe with inode ino; noReader whether nobody holds that
// pipe's read end any more, as poll(2) tells a writer (POLLERR on Linux,
// POLLHUP elsewhere). It changes nothing.
func probePipe(fd int, ino uint64) (same, noReader bool) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO || uint64(st.Ino) != ino {
		return false, false
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_ACCMODE != unix.O_WRONLY {
		return false, false
	}
	return true, readerGone(fd)
}

// readerGone reports whether nobody holds the read end of the pipe whose
// write end is fd any more, as poll(2) tells a writer (POLLERR on Linux,
// POLLHUP elsewhere), without waiting.
func readerGone(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	var err error
	for {
		_, err = unix.Poll(fds, 0)
		if err != unix.EINTR {
			break
		}
	}
	return err == nil && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
}

// checkSocket makes sure en.FD is an open socket of the kind en says: a
// listening stream socket for tcp and unix, a datagram socket for udp, of
// the right address family. With fill set (systemd) it sets en.Network and
// en.Address from the socket instead of checking them. It leaves the fd
// as it is: Open closes it once net holds a close-on-exec duplicate.
func checkSocket(en *Entry, fill bool) error {
	fd := en.FD
	typ, sa, err := socketOf(fd)
	if err != nil {
		return err
	}
	network, addr := describe(sa, typ)
	if network == "" {
		return fmt.Errorf("unsupported socket (type %d, address %T)", typ, sa)
	}
	if fill {
		en.Network, en.Address = network, addr
	} else if !sameFamily(network, en.Network) {
		return fmt.Errorf("is a %s socket, the entry says %s", network, en.Network)
	}
	if typ == unix.SOCK_STREAM {
		listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return fmt.Errorf("SO_ACCEPTCONN: %w", err)
		}
		if listening == 0 {
			return errors.New("socket is not listening")
		}
	}
	return nil
}

// describe names the network of a socket and its local address.
func describe(sa unix.Sockaddr, typ int) (network, addr string) {
	stream := typ == unix.SOCK_STREAM
	if typ != unix.SOCK_STREAM && typ != unix.SOCK_DGRAM {
		return "", ""
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		addr = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
		return pick(stream, "tcp4", "udp4"), addr
	case *unix.SockaddrInet6:
		addr = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
		return pick(stream, "tcp6", "udp6"), addr
	case *unix.SockaddrUnix:
		if stream {
			return "unix", sa.Name
		}
	}
	return "", ""
}

// quickCheck reports whether en's fd is, in one system call, what a
// hand-off's entry of its network needs: a listening socket
// (SO_ACCEPTCONN) for a stream entry, a datagram socket (SO_TYPE) for a
// packet one. The address family is checked on what net makes of it.
func quickCheck(en Entry) bool {
	opt, want := unix.SO_ACCEPTCONN, 1
	if IsPacket(en.Network) {
		opt, want = unix.SO_TYPE, unix.SOCK_DGRAM
	}
	v, err := unix.GetsockoptInt(en.FD, unix.SOL_SOCKET, opt)
	return err == nil && v == want
}

func describeErrno(err error) error {
	switch {
	case errors.Is(err, unix.EBADF):
		return errors.New("fd is not open")
	case errors.Is(err, unix.ENOTSOCK):
		return errors.New("not a socket")
	}
	return err
}

// socketOf returns the type and local address of socket fd, or why fd
// is no socket.
func socketOf(fd int) (typ int, sa unix.Sockaddr, err error) {
	// No fstat first: SO_TYPE tells a closed fd (EBADF) and one that is no
	// socket (ENOTSOCK) as well, in one system call fewer per socket.
	if typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		if errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOTSOCK) {
			return 0, nil, describeErrno(err)
		}
		return 0, nil, fmt.Errorf("SO_TYPE: %w", err)
	}
	if sa, err = unix.Getsockname(fd); err != nil {
		return 0, nil, fmt.Errorf("getsockname: %w", err)
	}
	return typ, sa, nil
}

// checkMail makes sure fd is a Unix datagram socket, one end of a
// mailbox, and makes it close-on-exec.
func checkMail(fd int) error { return checkUnix(fd, unix.SOCK_DGRAM, "datagram") }

// checkHandoff makes sure fd is a Unix SOCK_SEQPACKET socket, the child's
// end of a hand-off channel, and makes it close-on-exec.
func checkHandoff(fd int) error { return checkUnix(fd, unix.SOCK_SEQPACKET, "seqpacket") }

// checkUnix makes sure fd is a Unix socket of type typ (named kind in the
// error), and makes it close-on-exec.
func checkUnix(fd, typ int, kind string) error {
	got, sa, err := socketOf(fd)
	if err != nil {
		return err
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok || got != typ {
		return fmt.Errorf("not a Unix %s socket (type %d, address %T)", kind, got, sa)
	}
	unix.CloseOnExec(fd)
	return nil
}
