//go:build linux

package tcpgrace

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// ioTimeout bounds every single network wait of the tests.
const ioTimeout = 5 * time.Second

// assertAccepts dials ln's address and requires that ln accepts the
// connection within ioTimeout.
func assertAccepts(t *testing.T, ln net.Listener, msg string) {
	t.Helper()
	addr := ln.Addr()
	c, err := net.DialTimeout(addr.Network(), addr.String(), ioTimeout)
	require.NoError(t, err, "%s: dialing %s %s should succeed", msg, addr.Network(), addr)
	defer c.Close()
	d, ok := ln.(interface{ SetDeadline(time.Time) error })
	require.True(t, ok, "%s: the listener should support SetDeadline", msg)
	require.NoError(t, d.SetDeadline(time.Now().Add(ioTimeout)))
	defer d.SetDeadline(time.Time{})
	sc, err := ln.Accept()
	require.NoError(t, err, "%s: the listener should accept the connection we dialed", msg)
	sc.Close()
}

// assertPacketRoundTrip sends a datagram to pc and requires pc to receive it.
func assertPacketRoundTrip(t *testing.T, pc net.PacketConn, msg string) {
	t.Helper()
	addr := pc.LocalAddr()
	c, err := net.Dial(addr.Network(), addr.String())
	require.NoError(t, err, "%s: dialing %s should succeed", msg, addr)
	defer c.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err, "%s: sending a datagram should succeed", msg)
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(ioTimeout)))
	defer pc.SetReadDeadline(time.Time{})
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	require.NoError(t, err, "%s: the packet conn should receive our datagram", msg)
	assert.Equal(t, "ping", string(buf[:n]), "%s: the datagram should arrive unchanged", msg)
}

// haveIPv6Loopback reports whether [::1] can be bound here.
func haveIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func TestListenReturnsSameSocketForSameName(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")

	web, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "a first Listen should bind")
	again, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "a second Listen of the same name, network and address should succeed")
	assert.Same(t, web, again, "a second Listen should return the listener registered first")

	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "a first unix Listen should bind")
	again, err = u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "a second unix Listen should succeed")
	assert.Same(t, ctl, again, "a second unix Listen should return the listener registered first")

	dns, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "a first ListenPacket should bind")
	pagain, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "a second ListenPacket should succeed")
	assert.Same(t, dns, pagain, "a second ListenPacket should return the packet conn registered first")

	assertAccepts(t, web, "the tcp listener")
	assertAccepts(t, ctl, "the unix listener")
	assertPacketRoundTrip(t, dns, "the udp conn")
}

func TestListenNameConflict(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	web, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "registering web should succeed")
	_, err = u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "registering ctl should succeed")
	_, err = u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "registering dns should succeed")

	for _, tc := range []struct {
		desc                   string
		packet                 bool
		name, network, address string
	}{
		{"another address", false, "web", "tcp4", "127.0.0.2:0"},
		{"the concrete address instead of the one asked for", false, "web", "tcp4", web.Addr().String()},
		{"another network", false, "web", "tcp", loopback},
		{"unix instead of tcp", false, "web", "unix", sock},
		{"a packet network", true, "web", "udp4", loopback},
		{"another unix path", false, "ctl", "unix", sock + "2"},
		{"tcp instead of unix", false, "ctl", "tcp4", loopback},
		{"stream instead of packet", false, "dns", "tcp4", loopback},
		{"another packet network", true, "dns", "udp", loopback},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var err error
			if tc.packet {
				_, err = u.ListenPacket(tc.name, tc.network, tc.address)
			} else {
				_, err = u.Listen(tc.name, tc.network, tc.address)
			}
			assert.ErrorIs(t, err, ErrNameConflict, "%q asked for as %s %s should conflict", tc.name, tc.network, tc.address)
		})
	}
	again, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "the original registration should still be there after conflicts")
	assert.Same(t, web, again, "conflicts should not replace the registered listener")
	assertAccepts(t, web, "web after the conflicts")
	_, err = os.Lstat(sock + "2")
	assert.ErrorIs(t, err, os.ErrNotExist, "a conflicting Listen should not create a socket file")
}

func TestListenSeveralSocketsAtOnce(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	dir := t.TempDir()
	streams := []struct{ name, network, address string }{
		{"tcp-a", "tcp4", loopback},
		{"tcp-b", "tcp4", loopback},
		{"tcp-any", "tcp", loopback},
		{"unix-a", "unix", filepath.Join(dir, "a.sock")},
		{"unix-b", "unix", filepath.Join(dir, "b.sock")},
	}
	if haveIPv6Loopback() {
		streams = append(streams, struct{ name, network, address string }{"tcp6", "tcp6", "[::1]:0"})
	} else {
		t.Log("no IPv6 loopback here: not testing tcp6 [::1]:0")
	}
	addrs := map[string]string{}
	var lns []net.Listener
	for _, s := range streams {
		ln, err := u.Listen(s.name, s.network, s.address)
		require.NoError(t, err, "Listen(%q, %s, %s) should succeed", s.name, s.network, s.address)
		prev, dup := addrs[ln.Addr().String()]
		assert.False(t, dup, "%q and %q should not share the address %s", s.name, prev, ln.Addr())
		addrs[ln.Addr().String()] = s.name
		lns = append(lns, ln)
	}
	var pcs []net.PacketConn
	for _, name := range []string{"udp-a", "udp-b"} {
		pc, err := u.ListenPacket(name, "udp4", loopback)
		require.NoError(t, err, "ListenPacket(%q, udp4) should succeed", name)
		pcs = append(pcs, pc)
	}
	for i, ln := range lns {
		assertAccepts(t, ln, streams[i].name)
	}
	for _, pc := range pcs {
		assertPacketRoundTrip(t, pc, pc.LocalAddr().String())
	}
	u.mu.Lock()
	live := len(u.liveSocketsLocked())
	u.mu.Unlock()
	assert.Equal(t, len(streams)+len(pcs), live, "every socket should be registered for the next generation")
}

func TestListenWrongNetwork(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, network := range []string{"udp", "udp4", "udp6", "ip4", "unixgram", "unixpacket", ""} {
		_, err := u.Listen("x", network, loopback)
		assert.Error(t, err, "Listen with network %q should fail", network)
	}
	for _, network := range []string{"tcp", "tcp4", "tcp6", "unix", "ip", ""} {
		_, err := u.ListenPacket("x", network, loopback)
		assert.Error(t, err, "ListenPacket with network %q should fail", network)
	}
	_, err := u.ListenPacket("x", "unix", sock)
	assert.Error(t, err, "ListenPacket on a unix path should fail")
	_, err = os.Lstat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "a refused ListenPacket should not create a socket file")
	u.mu.Lock()
	assert.Empty(t, u.sockets, "refused requests should register nothing")
	u.mu.Unlock()
}

func TestListenInvalidName(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	for _, name := range []string{"", "a\nb", "nul\x00", "tab\there", "del\x7f", "\x1b[31m", "bad\xffutf8", strings.Repeat("n", wire.MaxNameLen+1)} {
		_, err := u.Listen(name, "tcp4", loopback)
		assert.Error(t, err, "Listen with name %q should fail", name)
		_, err = u.ListenPacket(name, "udp4", loopback)
		assert.Error(t, err, "ListenPacket with name %q should fail", name)
	}
	u.mu.Lock()
	assert.Empty(t, u.sockets, "invalid names should register nothing")
	u.mu.Unlock()
	for _, name := range []string{"web", "with space, comma; and=", "é", strings.Repeat("n", wire.MaxNameLen)} {
		ln, err := u.Listen(name, "tcp4", loopback)
		if assert.NoError(t, err, "Listen with the valid name %q should succeed", name) {
			ln.Close()
		}
	}
}

func TestCloseReleasesTCPPort(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	web, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "Listen should bind")
	addr := web.Addr().String()
	require.NoError(t, web.Close(), "closing the listener should succeed")
	assert.ErrorIs(t, web.Close(), net.ErrClosed, "a second Close of the listener should only say it is closed")

	plain, err := net.Listen("tcp4", addr)
	require.NoError(t, err, "after Close the port %s should be free to bind again", addr)
	require.NoError(t, plain.Close())

	again, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "after Close, Listen of the same name should bind anew")
	assert.NotSame(t, web, again, "after Close, Listen should return a new listener")
	assertAccepts(t, again, "the rebound listener")
}

func TestCloseReleasesUDPPort(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	dns, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "ListenPacket should bind")
	addr := dns.LocalAddr().String()
	require.NoError(t, dns.Close(), "closing the packet conn should succeed")

	plain, err := net.ListenPacket("udp4", addr)
	require.NoError(t, err, "after Close the port %s should be free to bind again", addr)
	require.NoError(t, plain.Close())

	again, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "after Close, ListenPacket of the same name should bind anew")
	assert.NotSame(t, dns, again, "after Close, ListenPacket should return a new conn")
	assertPacketRoundTrip(t, again, "the rebound packet conn")
}

// TestListenClaimsInheritedSockets runs the registry over a fake
// inheritance: sockets of a "parent" upgrader, duplicated and described as
// Upgrade would describe them.
func TestListenClaimsInheritedSockets(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	web, err := parent.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	ctl, err := parent.Listen("ctl", "unix", sock)
	require.NoError(t, err)
	dns, err := parent.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err)
	env := &wire.Env{Source: wire.EnvFDs, Generation: 2, ReadyFD: -1, Entries: []wire.Entry{
		{Name: "web", FD: rawDup(t, web.(syscall.Conn)), Network: "tcp4", Address: loopback},
		{Name: "ctl", FD: rawDup(t, ctl.(syscall.Conn)), Network: "unix", Address: sock},
		{Name: "dns", FD: rawDup(t, dns.(syscall.Conn)), Network: "udp4", Address: loopback},
	}}
	files, err := wire.Open(env)
	require.NoError(t, err, "wire.Open should accept the duplicated sockets")
	child, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	t.Cleanup(func() { child.Close() })
	assert.Equal(t, 2, child.Generation(), "the child should report the generation it was given")
	assert.False(t, child.inh.HasParent(), "without a readiness pipe there is no parent to tell")

	_, err = child.Listen("web", "tcp4", web.Addr().String())
	assert.ErrorIs(t, err, ErrNameConflict, "an inherited name asked for with another address should conflict")
	cweb, err := child.Listen("web", "tcp4", loopback)
	require.NoError(t, err, "the inherited web socket should be claimed")
	assert.Equal(t, web.Addr().String(), cweb.Addr().String(), "the child should serve the parent's TCP socket, not a new one")
	cctl, err := child.Listen("ctl", "unix", sock)
	require.NoError(t, err, "the inherited unix socket should be claimed")
	cdns, err := child.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err, "the inherited udp socket should be claimed")
	assert.Equal(t, dns.LocalAddr().String(), cdns.LocalAddr().String(), "the child should serve the parent's UDP socket")
	require.NoError(t, child.Ready(), "Ready without a parent should succeed")

	// The parent lets go as after a successful Upgrade; the child goes on
	// serving the same sockets.
	parent.mu.Lock()
	parent.state = handedOff
	parent.mu.Unlock()
	require.NoError(t, parent.Close(), "closing the parent should succeed")
	_, err = os.Lstat(sock)
	assert.NoError(t, err, "a parent that handed off should leave the socket file to the child")
	assertAccepts(t, cweb, "the child's inherited tcp listener")
	assertAccepts(t, cctl, "the child's inherited unix listener")
	assertPacketRoundTrip(t, cdns, "the child's inherited udp conn")
}

// rawDup duplicates the socket behind c as a bare fd (no *os.File, whose
// finalizer would close it behind wire.Open's back).
func rawDup(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd, derr := -1, error(nil)
	require.NoError(t, rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }))
	require.NoError(t, derr, "F_DUPFD_CLOEXEC should succeed")
	return fd
}

// TestEmptyAddressRejected: net.Listen takes "" as any port, but the
// hand-off could not name it; Listen says so at once instead of every
// later Upgrade failing.
func TestEmptyAddressRejected(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	_, err := u.Listen("web", "tcp", "")
	assert.ErrorContains(t, err, `empty tcp address (for any port say ":0")`)
	_, err = u.ListenPacket("dns", "udp", "")
	assert.ErrorContains(t, err, "empty udp address")
}
