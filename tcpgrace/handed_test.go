//go:build linux

package tcpgrace

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPinHoldsSockets: pin hands start each registered socket's own fd,
// no duplicate, and a Close of a listener (through the registry) or of a
// packet conn (directly, as its user may) waits until start returns, so
// that the fd numbers start passes on cannot name other files by then. A
// socket closed before the pin fails it, named.
func TestPinHoldsSockets(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	pc, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err)
	pinned := func() *handed {
		h := &handed{closing: &u.closing}
		web, dns := u.sockets["web"], u.sockets["dns"]
		h.addSocket(web.raw, "web", true)
		h.addSocket(dns.raw, "dns", false)
		return h
	}

	first, second := pinned(), pinned()
	closed := make(chan string, 2)
	err = first.pin(func(fds []int) error {
		require.Len(t, fds, 2)
		assert.Equal(t, fdOf(t, ln.(syscall.Conn)), fds[0], "the listener's own fd, no duplicate")
		assert.Equal(t, fdOf(t, pc.(syscall.Conn)), fds[1], "the packet conn's own fd, no duplicate")
		go func() {
			ln.Close()
			closed <- "web"
		}()
		go func() {
			pc.Close()
			closed <- "dns"
		}()
		select {
		case name := <-closed:
			t.Errorf("%s's Close returned while it was pinned", name)
		case <-time.After(200 * time.Millisecond):
		}
		for i, want := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
			typ, err := unix.GetsockoptInt(fds[i], unix.SOL_SOCKET, unix.SO_TYPE)
			assert.NoError(t, err, "fd %d is still open while pinned", fds[i])
			assert.Equal(t, want, typ, "fd %d is still its socket", fds[i])
		}
		return nil
	})
	require.NoError(t, err)
	for range 2 {
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("a Close did not return once the pin ended")
		}
	}

	err = second.pin(func([]int) error {
		t.Error("start ran though the sockets were closed")
		return nil
	})
	assert.ErrorContains(t, err, `"web" was closed during the upgrade`)
}

// fdOf is the fd of c, to compare with the fds an upgrade hands on.
func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, rc.Control(func(s uintptr) { fd = int(s) }))
	return fd
}
