//go:build linux

package tcpgrace

import (
	"errors"
	"io"
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

	"github.com/tcpgrace/tcpgrace/inherit"
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

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st), "%s should exist", path)
	return st.Ino
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
	for _, name := range []string{"", "a\nb", "nul\x00", "tab\there", "del\x7f", "\x1b[31m", "bad\xffutf8", strings.Repeat("n", inherit.MaxNameLen+1)} {
		_, err := u.Listen(name, "tcp4", loopback)
		assert.Error(t, err, "Listen with name %q should fail", name)
		_, err = u.ListenPacket(name, "udp4", loopback)
		assert.Error(t, err, "ListenPacket with name %q should fail", name)
	}
	u.mu.Lock()
	assert.Empty(t, u.sockets, "invalid names should register nothing")
	u.mu.Unlock()
	for _, name := range []string{"web", "with space, comma; and=", "é", strings.Repeat("n", inherit.MaxNameLen)} {
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
	assert.NoError(t, web.Close(), "a second Close of the listener should be harmless")

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

func TestCloseRemovesUnixSocketFile(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "unix Listen should bind")
	fi, err := os.Lstat(sock)
	require.NoError(t, err, "Listen should create the socket file")
	assert.Equal(t, os.ModeSocket, fi.Mode().Type(), "the file should be a socket")

	require.NoError(t, ctl.Close(), "closing the unix listener should succeed")
	_, err = os.Lstat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "closing the listener should remove its socket file")

	plain, err := net.Listen("unix", sock)
	require.NoError(t, err, "after Close the path should be free to bind again")
	require.NoError(t, plain.Close())

	again, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "after Close, Listen of the same name should bind anew")
	assert.NotSame(t, ctl, again, "after Close, Listen should return a new listener")
	assertAccepts(t, again, "the rebound unix listener")
}

func TestCloseLeavesForeignUnixSocketFile(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "unix Listen should bind")
	// Someone else takes the path over while we still hold our socket.
	require.NoError(t, os.Remove(sock))
	other, err := net.Listen("unix", sock)
	require.NoError(t, err, "binding the freed path should succeed")
	defer other.Close()
	ino := inode(t, sock)

	require.NoError(t, ctl.Close(), "closing our listener should succeed")
	assert.Equal(t, ino, inode(t, sock), "closing our listener should not remove a socket file someone else created since")
	assertAccepts(t, other, "the other server")
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	stale, err := net.Listen("unix", sock)
	require.NoError(t, err, "creating the stale socket should succeed")
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())
	staleIno := inode(t, sock)
	_, err = net.DialTimeout("unix", sock, ioTimeout)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "precondition: nobody listens on the stale socket file")

	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "Listen should replace a stale socket file")
	assert.NotEqual(t, staleIno, inode(t, sock), "the socket file should be a new one")
	assertAccepts(t, ctl, "the listener that replaced the stale file")
}

func TestListenUnixRefusesLiveSocket(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	live, err := net.Listen("unix", sock)
	require.NoError(t, err, "starting the live server should succeed")
	defer live.Close()
	ino := inode(t, sock)

	_, err = u.Listen("ctl", "unix", sock)
	assert.ErrorIs(t, err, syscall.EADDRINUSE, "Listen on a path a live server listens on should fail with EADDRINUSE")
	assert.Equal(t, ino, inode(t, sock), "the live server's socket file should be left in place")
	u.mu.Lock()
	assert.Empty(t, u.sockets, "a failed Listen should register nothing")
	u.mu.Unlock()

	// The live server still serves. Its backlog may hold the probe that
	// told it from a stale file first: accept until our connection shows.
	c, err := net.DialTimeout("unix", sock, ioTimeout)
	require.NoError(t, err, "the live server should still take connections")
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, live.(*net.UnixListener).SetDeadline(time.Now().Add(ioTimeout)))
	got := false
	for range 2 {
		sc, err := live.Accept()
		require.NoError(t, err, "the live server should still accept")
		sc.SetReadDeadline(time.Now().Add(ioTimeout))
		b := make([]byte, 1)
		n, _ := sc.Read(b)
		sc.Close()
		if got = n == 1 && b[0] == 'x'; got {
			break
		}
	}
	assert.True(t, got, "the live server should receive our connection")
}

func TestListenUnixRefusesRegularFile(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	path := filepath.Join(t.TempDir(), "not-a-socket")
	require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o640))

	_, err := u.Listen("ctl", "unix", path)
	assert.Error(t, err, "Listen on a regular file should fail")
	assert.NotErrorIs(t, err, syscall.EADDRINUSE, "a regular file is no live server")
	b, rerr := os.ReadFile(path)
	require.NoError(t, rerr, "the regular file should still exist")
	assert.Equal(t, "keep me", string(b), "the regular file's content should be untouched")
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode(), "the regular file's mode should be untouched")
}

func TestListenUnixMode(t *testing.T) {
	for _, tc := range []struct {
		mode, want os.FileMode
	}{
		{0, DefaultUnixMode},
		{0o660, 0o660},
		{0o666, 0o666},
		{0o700, 0o700},
	} {
		t.Run(tc.want.String(), func(t *testing.T) {
			u := newColdUpgrader(t, Options{UnixMode: tc.mode})
			sock := filepath.Join(t.TempDir(), "s.sock")
			_, err := u.Listen("ctl", "unix", sock)
			require.NoError(t, err, "unix Listen should bind")
			fi, err := os.Lstat(sock)
			require.NoError(t, err, "the socket file should exist")
			assert.Equal(t, os.ModeSocket, fi.Mode().Type(), "the file should be a socket")
			assert.Equal(t, tc.want, fi.Mode().Perm(), "Options.UnixMode %v should give the socket file mode %v", tc.mode, tc.want)
		})
	}
	assert.Equal(t, os.FileMode(0o600), DefaultUnixMode, "the default mode should let only the owner connect")
}

func TestListenUnixAbstract(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	name := "@tcpgrace-test-" + t.Name() + "-" + time.Now().Format("150405.000000000")
	ctl, err := u.Listen("ctl", "unix", name)
	require.NoError(t, err, "Listen on an abstract unix address should bind")
	assertAccepts(t, ctl, "the abstract unix listener")
	_, err = os.Lstat(name)
	assert.ErrorIs(t, err, os.ErrNotExist, "an abstract socket should leave no file behind")
	require.NoError(t, ctl.Close())
	plain, err := net.Listen("unix", name)
	require.NoError(t, err, "after Close the abstract address should be free")
	plain.Close()
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
	env := &inherit.Env{Source: inherit.EnvFDs, Generation: 2, ReadyFD: -1, Entries: []inherit.Entry{
		{Name: "web", FD: rawDup(t, web.(syscall.Conn)), Network: "tcp4", Address: loopback},
		{Name: "ctl", FD: rawDup(t, ctl.(syscall.Conn)), Network: "unix", Address: sock},
		{Name: "dns", FD: rawDup(t, dns.(syscall.Conn)), Network: "udp4", Address: loopback},
	}}
	files, err := inherit.Open(env)
	require.NoError(t, err, "inherit.Open should accept the duplicated sockets")
	child, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	t.Cleanup(func() { child.Close() })
	assert.Equal(t, 2, child.Generation(), "the child should report the generation it was given")
	assert.False(t, child.HasParent(), "without a readiness pipe there is no parent to tell")

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
	parent.handedOff = true
	parent.mu.Unlock()
	require.NoError(t, parent.Close(), "closing the parent should succeed")
	_, err = os.Lstat(sock)
	assert.NoError(t, err, "a parent that handed off should leave the socket file to the child")
	assertAccepts(t, cweb, "the child's inherited tcp listener")
	assertAccepts(t, cctl, "the child's inherited unix listener")
	assertPacketRoundTrip(t, cdns, "the child's inherited udp conn")
}

// rawDup duplicates the socket behind c as a bare fd (no *os.File, whose
// finalizer would close it behind inherit.Open's back).
func rawDup(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd, derr := -1, error(nil)
	require.NoError(t, rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }))
	require.NoError(t, derr, "F_DUPFD_CLOEXEC should succeed")
	return fd
}

// TestFailedChildKeepsParentUnixSocketFile pins a bug: a next generation
// that inherited a Unix socket and gives up before Ready (Fail, then the
// usual deferred Close on its way out) unlinks the socket file that its
// parent, which keeps serving after the failed upgrade, still listens on.
// New clients of the parent then find no file at the path.
func TestFailedChildKeepsParentUnixSocketFile(t *testing.T) {
	if os.Getenv("TCPGRACE_RUN_BUG_TESTS") == "" {
		t.Skip("BUG: a child that fails before Ready unlinks its parent's live Unix socket file on Close/Shutdown " +
			"(registry.go newListener sets s.unix for inherited sockets; shutdown.go stop removes it); " +
			"set TCPGRACE_RUN_BUG_TESTS=1 to run")
	}
	parent := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := parent.Listen("ctl", "unix", sock)
	require.NoError(t, err)

	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC), "creating the readiness pipe should succeed")
	r := os.NewFile(uintptr(p[0]), "ready-r")
	defer r.Close()
	env := &inherit.Env{Source: inherit.EnvFDs, Generation: 2, ReadyFD: p[1], Entries: []inherit.Entry{
		{Name: "ctl", FD: rawDup(t, ctl.(syscall.Conn)), Network: "unix", Address: sock},
	}}
	files, err := inherit.Open(env)
	require.NoError(t, err)
	child, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	require.True(t, child.HasParent(), "precondition: the child has a parent waiting for it")
	_, err = child.Listen("ctl", "unix", sock)
	require.NoError(t, err, "the child should claim the inherited unix socket")

	require.NoError(t, child.Fail(errors.New("config broken")), "Fail should reach the parent")
	msg, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "Fconfig broken", string(msg), "the parent should read the failure")
	child.Close() // what a failing main's deferred Close does

	_, err = os.Lstat(sock)
	assert.NoError(t, err, "the parent's socket file should survive the failed child")
	assertAccepts(t, ctl, "the parent, still serving after the failed upgrade")
}
