package handoff

import (
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestNewConn: NewConn takes an end of a pair (and works on its own
// duplicate), and refuses a pipe and a Unix datagram socket, naming the
// fd and what it is.
func TestNewConn(t *testing.T) {
	a, b := pair(t)
	f, err := b.File()
	require.NoError(t, err)
	defer f.Close()
	c, err := NewConn(f)
	require.NoError(t, err, "NewConn on an end of Pair")
	defer c.Close()
	require.NoError(t, a.send(Header{Kind: KindAck, Txn: 5}, nil, nil))
	fr, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, uint64(5), fr.h.Txn, "the frame sent on a arrives on NewConn's duplicate of b")

	r := pipes(t, 1)[0]
	_, err = NewConn(r)
	require.Error(t, err, "NewConn on a pipe")
	assert.Regexp(t, `fd \d+ \(\|0\): not a socket`, err.Error())

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	require.NoError(t, err)
	d := os.NewFile(uintptr(fds[0]), "dgram")
	defer d.Close()
	defer unix.Close(fds[1])
	_, err = NewConn(d)
	require.Error(t, err, "NewConn on a datagram socket")
	assert.Regexp(t, `fd \d+ \(dgram\): not a Unix SOCK_SEQPACKET socket \(type 2`, err.Error())
}

// TestForgedFrames: frames forged by hand and sent raw; each gives the
// error it must, and the fds that came with a bad frame are closed.
func TestForgedFrames(t *testing.T) {
	hdr := func(h Header) []byte { h.Version = max(h.Version, Version); return h.encode(nil) }
	for _, c := range []struct {
		name  string
		b     []byte
		fds   int
		field string
		err   error
	}{
		{"wrong magic", append([]byte("HTTP"), hdr(Header{Kind: KindAck})[4:]...), 0, "magic", ErrMalformed},
		{"version 2", hdr(Header{Version: 2, Kind: KindHello}), 0, "version", ErrVersion},
		{"length mismatch", append(hdr(Header{Kind: KindAbort, Len: 100}), "short"...), 0, "payload length", ErrMalformed},
		{"more fds than said", append(hdr(Header{Kind: KindItem, Len: 2, FDs: 1}), 0, 1), 3, "fd count", ErrMalformed},
		{"fds but none said", append(hdr(Header{Kind: KindItem, Len: 2}), 0, 1), 2, "fd count", ErrMalformed},
		{"oversized datagram", make([]byte, MaxFrame+1), 0, "length", ErrTruncated},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := pair(t)
			before := fdCount(t)
			var oob []byte
			if c.fds > 0 {
				oob = unix.UnixRights(fdsOf(t, pipes(t, c.fds))...)
				before = fdCount(t)
			}
			require.NoError(t, a.sendRaw(c.b, oob), "raw send")
			_, err := b.recv()
			var fe *FrameError
			require.ErrorAs(t, err, &fe, "a *FrameError expected, got %v", err)
			assert.Equal(t, c.field, fe.Field, "the field named: %v", err)
			assert.ErrorIs(t, err, c.err)
			t.Log(err)
			assert.Equal(t, before, fdCount(t), "the fds of a bad frame are closed")
		})
	}
}

// fdsOf is the fds of files.
func fdsOf(t *testing.T, files []*os.File) []int {
	var fds []int
	for _, f := range files {
		fds = append(fds, rawFD(t, f))
	}
	return fds
}

// TestTruncation: a frame longer than the receive buffer (MSG_TRUNC) and
// fds beyond the control buffer (MSG_CTRUNC) are errors, and the fds
// that did arrive are closed.
func TestTruncation(t *testing.T) {
	t.Run("MSG_TRUNC", func(t *testing.T) {
		a, b := pair(t)
		b.buf = make([]byte, HeaderLen+10)
		require.NoError(t, a.send(Header{Kind: KindAbort, Txn: 1}, make([]byte, 11), nil))
		_, err := b.recv()
		assert.ErrorIs(t, err, ErrTruncated)
		assert.ErrorContains(t, err, "MSG_TRUNC")
	})
	t.Run("MSG_CTRUNC", func(t *testing.T) {
		a, b := pair(t)
		files := pipes(t, 3)
		b.oob = make([]byte, unix.CmsgSpace(4))
		before := fdCount(t)
		require.NoError(t, a.send(Header{Kind: KindItem, Txn: 1}, []byte{0, 1}, fdsOf(t, files)))
		_, err := b.recv()
		assert.ErrorIs(t, err, ErrTruncated)
		assert.ErrorContains(t, err, "MSG_CTRUNC")
		assert.Equal(t, before, fdCount(t), "the fd that fit is closed")
	})
}

// TestPeerClosed: reading from a channel whose other end is closed is
// ErrPeerClosed, and so is writing to it.
func TestPeerClosed(t *testing.T) {
	a, b := pair(t)
	require.NoError(t, b.Close())
	_, err := a.recv()
	assert.ErrorIs(t, err, ErrPeerClosed)
	err = a.send(Header{Kind: KindAck}, nil, nil)
	assert.ErrorIs(t, err, ErrPeerClosed)
}

// listenerFile is a duplicate of a loopback TCP listener, and its
// address; the listener itself is closed.
func listenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return f, ln.Addr().String()
}

// accepts checks that the listener behind f still accepts a connection.
func accepts(t *testing.T, f *os.File, addr string) {
	t.Helper()
	ln, err := net.FileListener(f)
	require.NoError(t, err, "net.FileListener on the kept listener")
	defer ln.Close()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err, "dial the kept listener")
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err, "the kept listener accepts")
	s.Close()
}
