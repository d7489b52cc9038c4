//go:build linux

package tcpgrace

import (
	"context"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// nonBlocking reports whether the socket behind c has O_NONBLOCK, read
// with fcntl(F_GETFL) on the fd itself.
func nonBlocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err, "SyscallConn should work on a live socket")
	flags, ferr := 0, error(nil)
	require.NoError(t, rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	require.NoError(t, ferr, "fcntl(F_GETFL) should succeed")
	return flags&unix.O_NONBLOCK != 0
}

// TestFileFdClearsNonBlock is the control for the tests below: it shows
// that the check sees the trap DESIGN.md warns about, where
// (*net.TCPListener).File then Fd switches the shared socket to blocking
// mode, after which Close of an idle listener hangs.
func TestFileFdClearsNonBlock(t *testing.T) {
	ln, err := net.Listen("tcp4", loopback)
	require.NoError(t, err)
	defer ln.Close()
	require.True(t, nonBlocking(t, ln.(*net.TCPListener)), "precondition: Go's listeners are non-blocking")
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	f.Fd()
	f.Close()
	assert.False(t, nonBlocking(t, ln.(*net.TCPListener)), "File().Fd() should have cleared O_NONBLOCK on the shared socket")
}

func TestDupSocketKeepsSocketsNonBlocking(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	socks := map[string]syscall.Conn{
		nameWeb: h.web.(syscall.Conn),
		nameCtl: h.ctl.(syscall.Conn),
		nameDNS: h.dns.(syscall.Conn),
	}
	assertAll := func(when string) {
		t.Helper()
		for name, c := range socks {
			assert.True(t, nonBlocking(t, c), "%q should still be non-blocking %s", name, when)
		}
	}
	assertAll("at the start")
	for name, c := range socks {
		fd, err := dupSocket(c, name)
		require.NoError(t, err, "dupSocket(%q) should succeed", name)
		assert.True(t, nonBlocking(t, c), "%q should be non-blocking after dupSocket", name)
		require.NoError(t, syscall.Close(fd))
	}
	assertAll("after dupSocket and closing the duplicate")

	h.useMissing()
	assert.ErrorIs(t, h.u.Upgrade(context.Background()), ErrChildFailed, "precondition: the upgrade fails to start")
	assertAll("after an upgrade that could not start its child")

	h.useChild(childExit3)
	h.u.opts.ReadyTimeout = exitReadyTimeout // no Upgrade runs: no race
	assert.ErrorIs(t, h.u.Upgrade(context.Background()), ErrChildFailed, "precondition: the child exits")
	assertAll("after an upgrade whose child got the sockets and exited")

	assertCloseUnblocksAccept(t, h.web, "the tcp listener")
	assertCloseUnblocksAccept(t, h.ctl, "the unix listener")
}

// assertCloseUnblocksAccept requires that closing the idle ln returns
// promptly while another goroutine is blocked in its Accept, and that
// the Accept then fails with net.ErrClosed.
func assertCloseUnblocksAccept(t *testing.T, ln net.Listener, what string) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	waitBlockedInAccept(t)
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- ln.Close() }()
	assert.NoError(t, waitErr(t, closed, "Close of "+what), "Close of %s should succeed", what)
	assert.Less(t, time.Since(start), time.Second, "Close of %s should return promptly", what)
	assert.ErrorIs(t, waitErr(t, accepted, "Accept on "+what), net.ErrClosed, "the blocked Accept on %s should fail with net.ErrClosed", what)
}

// waitBlockedInAccept waits until a goroutine is parked in the network
// poller inside the registry listener's Accept.
func waitBlockedInAccept(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, "tcpgrace.(*listener).Accept") {
				return true
			}
		}
		return false
	}, ioTimeout, time.Millisecond, "a goroutine should be blocked in Accept")
}
