//go:build linux

package tcpgrace

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPinHoldsSockets: pin hands start each registered socket's own fd,
// and a Close of one of those listeners meanwhile waits until start
// returns, so that the fd number start passes on cannot name another
// file by then. A socket closed before the pin fails it, named.
func TestPinHoldsSockets(t *testing.T) {
	a, err := net.Listen("tcp4", loopback)
	require.NoError(t, err)
	defer a.Close()
	b, err := net.Listen("tcp4", loopback)
	require.NoError(t, err)
	defer b.Close()
	h := &handed{}
	h.addSocket(rawOnce(a.(syscall.Conn)), "a")
	h.addSocket(rawOnce(b.(syscall.Conn)), "b")

	closed := make(chan struct{})
	err = h.pin(func(fds []int) error {
		require.Len(t, fds, 2)
		assert.Equal(t, fdOf(t, a.(syscall.Conn)), fds[0], "a's own fd, no duplicate")
		assert.Equal(t, fdOf(t, b.(syscall.Conn)), fds[1], "b's own fd, no duplicate")
		go func() {
			b.Close()
			close(closed)
		}()
		select {
		case <-closed:
			t.Error("b's Close returned while b was pinned")
		case <-time.After(200 * time.Millisecond):
		}
		v, err := unix.GetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		assert.NoError(t, err, "b's fd is still open while pinned")
		assert.Equal(t, 1, v, "and still b's listening socket")
		return nil
	})
	require.NoError(t, err)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("b's Close did not return once the pin ended")
	}

	err = h.pin(func([]int) error {
		t.Error("start ran though b was closed")
		return nil
	})
	assert.ErrorContains(t, err, `"b" was closed during the upgrade`)
}

func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, rc.Control(func(s uintptr) { fd = int(s) }))
	return fd
}
