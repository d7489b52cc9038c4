//go:build unix

package handoff

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// Conn is one end of a hand-off channel: a Unix SOCK_SEQPACKET socket,
// non-blocking, close-on-exec, with deadlines. It carries frames; a
// [Giver] or a [Taker] speaks the transactions over it. Close closes it;
// a Conn is used by one goroutine at a time.
type Conn struct {
	f   *os.File
	rc  syscall.RawConn
	buf []byte // receive buffer: MaxFrame bytes, made by the first recv (tests shrink it)
	oob []byte // control buffer: room for MaxFDsPerFrame fds (tests shrink it)
}

// Pair makes a connected pair of channel ends (socketpair(2), both ends
// close-on-exec). The parent keeps one and hands the other's [Conn.File]
// to its child.
func Pair() (*Conn, *Conn, error) {
	fds, err := sockfd.Socketpair(unix.SOCK_SEQPACKET)
	if err != nil {
		return nil, nil, fmt.Errorf("tcpgrace: hand-off: socketpair(AF_UNIX, SOCK_SEQPACKET): %w", err)
	}
	a, err := newConn(fds[0], "tcpgrace-handoff-0")
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := newConn(fds[1], "tcpgrace-handoff-1")
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// NewConn makes a Conn of a duplicate of f's fd, which must be a Unix
// SOCK_SEQPACKET socket (an end of [Pair], inherited). The caller still
// owns f and closes it when it likes; the Conn's fd is its own. The error
// names the fd and what it is instead.
func NewConn(f *os.File) (*Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcpgrace: hand-off: %s: %w", f.Name(), err)
	}
	var dup int
	var derr error
	err = rc.Control(func(fd uintptr) {
		if derr = checkSeqpacket(int(fd)); derr != nil {
			derr = fmt.Errorf("tcpgrace: hand-off: fd %d (%s): %w", fd, f.Name(), derr)
			return
		}
		if dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); derr != nil {
			derr = fmt.Errorf("tcpgrace: hand-off: fd %d (%s): dup: %w", fd, f.Name(), derr)
		}
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	return newConn(dup, f.Name())
}

// checkSeqpacket says why fd is not a Unix SOCK_SEQPACKET socket, or nil.
func checkSeqpacket(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("not a socket (mode %#o)", st.Mode&unix.S_IFMT)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("SO_TYPE: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok || typ != unix.SOCK_SEQPACKET {
		return fmt.Errorf("not a Unix SOCK_SEQPACKET socket (type %d, address %T)", typ, sa)
	}
	return nil
}

// newConn wraps fd, which it owns from now on, non-blocking so that
// deadlines work.
func newConn(fd int, name string) (*Conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tcpgrace: hand-off: fd %d: non-blocking: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tcpgrace: hand-off: fd %d: %w", fd, err)
	}
	return &Conn{f: f, rc: rc, oob: make([]byte, unix.CmsgSpace(4*MaxFDsPerFrame))}, nil
}

// File returns a duplicate of the channel's fd (close-on-exec; as an
// os/exec ExtraFiles entry the child gets it without). The caller closes it.
func (c *Conn) File() (*os.File, error) {
	var dup int
	var derr error
	if err := c.rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("tcpgrace: hand-off: dup: %w", derr)
	}
	return os.NewFile(uintptr(dup), c.f.Name()), nil
}

// Close closes the channel's end; the peer then reads ErrPeerClosed. It
// wakes a blocked read or write.
func (c *Conn) Close() error { return c.f.Close() }

func (c *Conn) setDeadline(t time.Time) error { return c.f.SetDeadline(t) }

// send writes one frame: h (its version, length and fd count filled in
// here), payload and fds, which stay the caller's.
func (c *Conn) send(h Header, payload []byte, fds []int) error {
	h.Version, h.Len, h.FDs = Version, uint32(len(payload)), uint16(len(fds))
	b := h.encode(make([]byte, 0, HeaderLen+len(payload)))
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return c.sendRaw(b, oob)
}

// sendNow writes one frame without fds if there is room, without waiting
// and whatever the deadline: a last word when the deadline has passed.
func (c *Conn) sendNow(h Header, payload []byte) error {
	h.Version, h.Len = Version, uint32(len(payload))
	b := append(h.encode(make([]byte, 0, HeaderLen+len(payload))), payload...)
	var serr error
	if err := c.rc.Control(func(fd uintptr) { serr = unix.Sendmsg(int(fd), b, nil, nil, unix.MSG_DONTWAIT) }); err != nil {
		return err
	}
	return serr
}

// sendRaw writes one datagram b with control data oob, waiting for room.
func (c *Conn) sendRaw(b, oob []byte) error {
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, oob, nil, 0)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
		return fmt.Errorf("%w (send: %v)", ErrPeerClosed, err)
	}
	return err
}

// recv reads one frame and checks it (truncation, header, counts). The
// fds that came with a bad frame are closed; those of a good one are
// close-on-exec and the caller's.
func (c *Conn) recv() (frame, error) {
	if c.buf == nil {
		// Not before: a generation makes its channel early in its start,
		// and its first receive comes after it is ready.
		c.buf = make([]byte, MaxFrame)
	}
	var n, oobn, flags int
	var fds []int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		syscall.ForkLock.RLock() // no fork sees a received fd before close-on-exec
		defer syscall.ForkLock.RUnlock()
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), c.buf, c.oob, 0)
		if rerr == nil {
			fds = rights(c.oob[:oobn])
		}
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if errors.Is(err, unix.ECONNRESET) {
			return frame{}, fmt.Errorf("%w (receive: %v)", ErrPeerClosed, err)
		}
		return frame{}, err
	}
	fr, err := c.check(c.buf[:min(n, len(c.buf))], fds, flags)
	if err != nil {
		closeFDs(fds)
	}
	return fr, err
}

// check is recv's verdict on a datagram b that came with fds and recvmsg
// flags.
func (c *Conn) check(b []byte, fds []int, flags int) (frame, error) {
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		return frame{}, &FrameError{Field: "control", Err: ErrTruncated,
			Reason: fmt.Sprintf("fds cut off (MSG_CTRUNC), %d arrived with a %d-byte control buffer", len(fds), len(c.oob))}
	case flags&unix.MSG_TRUNC != 0:
		return frame{}, &FrameError{Field: "length", Err: ErrTruncated,
			Reason: fmt.Sprintf("datagram longer than the %d-byte receive buffer (MSG_TRUNC)", len(c.buf))}
	case len(b) == 0 && len(fds) == 0:
		return frame{}, ErrPeerClosed
	}
	h, payload, err := parseFrame(b, len(fds))
	if err != nil {
		return frame{}, err
	}
	return frame{h: h, payload: append([]byte(nil), payload...), fds: fds}, nil
}

// rights returns the fds of every SCM_RIGHTS message in oob, each made
// close-on-exec.
func rights(oob []byte) []int {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds
}

// fdOf is f's fd, read through SyscallConn so that f keeps its blocking
// mode. It stays valid while f is open.
func fdOf(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	n := -1
	if err := rc.Control(func(fd uintptr) { n = int(fd) }); err != nil {
		return -1, err
	}
	return n, nil
}

func closeFD(fd int) { unix.Close(fd) }
