//go:build linux

package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ioTimeout bounds every accept, read and dial in these tests.
const ioTimeout = 5 * time.Second

// dupFD returns a close-on-exec duplicate of c's fd, made through
// SyscallConn().Control (never File(), which would make the original
// blocking). The caller owns the duplicate: it hands it to Open, or closes
// it with closeOnCleanup.
func dupFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err, "SyscallConn must work on %T", c)
	fd, derr := -1, error(nil)
	require.NoError(t, rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}), "Control must run")
	require.NoError(t, derr, "F_DUPFD_CLOEXEC must duplicate the fd")
	return fd
}

// closeOnCleanup closes fds the test still owns, i.e. fds that no *Files
// took over because Open failed.
func closeOnCleanup(t *testing.T, fds ...int) {
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
}

// openFiles calls Open, which must succeed, and closes whatever the test
// leaves unclaimed when it ends.
func openFiles(t *testing.T, env *Env) *Files {
	t.Helper()
	f, err := Open(env)
	require.NoError(t, err, "Open must accept good fds")
	require.NotNil(t, f, "Open must return *Files on success")
	t.Cleanup(func() { f.CloseUnclaimed() })
	return f
}

func listenTCP(t *testing.T, network, address string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, address)
	require.NoError(t, err, "listening on %s %s", network, address)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func listenUnix(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err, "listening on unix %s", path)
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err, "listening on udp 127.0.0.1:0")
	t.Cleanup(func() { pc.Close() })
	return pc
}

// tempFile returns a duplicate of a regular file's fd. Open never takes
// it, so the test owns it and closes it when it ends.
func tempFile(t *testing.T) int {
	t.Helper()
	file, err := os.CreateTemp(t.TempDir(), "regular")
	require.NoError(t, err, "creating a regular file")
	t.Cleanup(func() { file.Close() })
	fd := dupFD(t, file)
	closeOnCleanup(t, fd)
	return fd
}

// ownedDup is dupFD for a socket that Open will reject: the test keeps
// owning the duplicate and closes it when it ends.
func ownedDup(t *testing.T, c syscall.Conn) int {
	t.Helper()
	fd := dupFD(t, c)
	closeOnCleanup(t, fd)
	return fd
}

// closedFD returns an fd number that is surely not open: freshly closed and
// far above anything the test allocates, so nothing reuses it meanwhile.
func closedFD(t *testing.T) int {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(unix.Stdin), unix.F_DUPFD_CLOEXEC, 1000)
	require.NoError(t, err, "duplicating stdin above 1000")
	require.NoError(t, unix.Close(fd), "closing the duplicate")
	return fd
}

// readyPipe returns the read end of a pipe and a duplicate of its write end
// to use as Env.ReadyFD. The original write end is closed, so the read end
// sees EOF once the duplicate is closed. The duplicate belongs to whoever
// Open hands it to; the test closes it only if Open rejects it.
func readyPipe(t *testing.T) (*os.File, int) {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err, "creating a pipe")
	t.Cleanup(func() { r.Close() })
	wfd := dupFD(t, w)
	require.NoError(t, w.Close(), "closing the original write end")
	require.NoError(t, r.SetReadDeadline(time.Now().Add(ioTimeout)), "setting a read deadline on the pipe")
	return r, wfd
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	require.NoError(t, err, "reading the readiness pipe to EOF")
	return string(b)
}

// assertClosed asserts that fd is not open.
func assertClosed(t *testing.T, fd int, what string) {
	t.Helper()
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	assert.ErrorIs(t, err, unix.EBADF, "%s (fd %d) must be closed", what, fd)
}

func assertCloseOnExec(t *testing.T, fd int, what string) {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err, "%s (fd %d) must be open", what, fd)
	assert.NotZero(t, flags&unix.FD_CLOEXEC, "%s (fd %d) must be close-on-exec", what, fd)
}

// assertServes connects to ln and checks that ln accepts the connection
// and carries a byte.
func assertServes(t *testing.T, ln net.Listener) {
	t.Helper()
	require.NotNil(t, ln, "want a listener")
	type deadliner interface{ SetDeadline(time.Time) error }
	require.NoError(t, ln.(deadliner).SetDeadline(time.Now().Add(ioTimeout)), "setting an accept deadline")
	c, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), ioTimeout)
	require.NoError(t, err, "dialling the inherited listener at %s", ln.Addr())
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err, "the inherited listener must accept")
	defer s.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)), "setting a read deadline")
	_, err = s.Write([]byte{'x'})
	require.NoError(t, err, "writing to the accepted connection")
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err, "reading from the dialled connection")
	assert.Equal(t, "x", string(b), "the byte sent over the accepted connection must arrive")
}

// assertPacketServes sends a datagram to pc and checks it arrives.
func assertPacketServes(t *testing.T, pc net.PacketConn) {
	t.Helper()
	require.NotNil(t, pc, "want a packet conn")
	c, err := net.Dial("udp", pc.LocalAddr().String())
	require.NoError(t, err, "dialling the inherited packet conn")
	defer c.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err, "sending a datagram")
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(ioTimeout)), "setting a read deadline")
	b := make([]byte, 16)
	n, _, err := pc.ReadFrom(b)
	require.NoError(t, err, "the inherited packet conn must receive")
	assert.Equal(t, "ping", string(b[:n]), "the datagram must arrive intact")
}

func TestDupKeepsOriginalNonBlocking(t *testing.T) {
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	fd := ownedDup(t, ln.(syscall.Conn))
	rc, err := ln.(syscall.Conn).SyscallConn()
	require.NoError(t, err, "SyscallConn")
	var flags int
	require.NoError(t, rc.Control(func(s uintptr) { flags, err = unix.FcntlInt(s, unix.F_GETFL, 0) }), "Control")
	require.NoError(t, err, "F_GETFL")
	assert.NotZero(t, flags&unix.O_NONBLOCK, "duplicating through Control must leave the original non-blocking")
	assertCloseOnExec(t, fd, "the duplicate")
}

func TestOpenNil(t *testing.T) {
	f, err := Open(nil)
	require.NoError(t, err, "Open(nil) is a first start, not an error")
	assert.Equal(t, 1, f.Generation(), "a first start is generation 1")
	assert.Empty(t, f.Source(), "a first start has no source")
	assert.False(t, f.HasParent(), "a first start has no parent")
	assert.Empty(t, f.Older(), "a first start has no older generations")
	assert.Empty(t, f.Unclaimed(), "a first start has nothing to claim")
	ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
	assert.NoError(t, err, "claiming on a first start is not an error")
	assert.Nil(t, ln, "a first start inherits no listener")
	pc, err := f.PacketConn("dns", "udp", "127.0.0.1:0")
	assert.NoError(t, err, "claiming on a first start is not an error")
	assert.Nil(t, pc, "a first start inherits no packet conn")
	assert.NoError(t, f.Ready(), "Ready without a parent does nothing")
	assert.NoError(t, f.Ready(), "Ready without a parent does nothing, twice too")
	assert.NoError(t, f.Fail(errors.New("x")), "Fail without a parent does nothing")
	assert.NoError(t, f.CloseUnclaimed(), "nothing to close on a first start")
}

func TestFilesOlder(t *testing.T) {
	tests := []struct {
		name string
		env  *Env
		want []int
	}{
		{"parent only", &Env{Source: EnvFDs, Writer: 100, Generation: 2, ReadyFD: -1}, []int{100}},
		{"parent and older", &Env{Source: EnvFDs, Writer: 100, Generation: 4, ReadyFD: -1, Older: []int{90, 80}},
			[]int{100, 90, 80}},
		{"systemd", &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openFiles(t, tt.env)
			got := f.Older()
			assert.Equal(t, tt.want, got, "Older must list the writer, then the older pids it listed")
			if len(got) > 0 {
				got[0] = -1
				assert.Equal(t, tt.want, f.Older(), "changing Older's result must not change the *Files")
			}
		})
	}
}

// TestOpenCopiesOlder is a regression test for a bug: Open copies env.Entries but keeps
// env.Older, so the caller's later changes to its *Env show through
// Files.Older.
func TestOpenCopiesOlder(t *testing.T) {
	env := &Env{Source: EnvFDs, Writer: 100, Generation: 3, ReadyFD: -1, Older: []int{90}}
	f := openFiles(t, env)
	env.Older[0] = -1
	assert.Equal(t, []int{100, 90}, f.Older(), "changing the env after Open must not change the *Files")
}

func TestOpenGoodSockets(t *testing.T) {
	tcp := listenTCP(t, "tcp", "127.0.0.1:0")
	ux, path := listenUnix(t)
	udp := listenUDP(t)
	env := &Env{Source: EnvFDs, Writer: os.Getppid(), Generation: 3, ReadyFD: -1, Entries: []Entry{
		{Name: "web", FD: dupFD(t, tcp.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
		{Name: "ctl", FD: dupFD(t, ux.(syscall.Conn)), Network: "unix", Address: path},
		{Name: "dns", FD: dupFD(t, udp.(syscall.Conn)), Network: "udp", Address: "127.0.0.1:0"},
	}}
	f := openFiles(t, env)
	assert.Equal(t, 3, f.Generation(), "Generation must come from the env")
	assert.Equal(t, EnvFDs, f.Source(), "Source must come from the env")
	assert.False(t, f.HasParent(), "no ready fd, no parent")
	assert.Equal(t, env.Entries, f.Unclaimed(), "before any claim every entry is unclaimed")

	ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
	require.NoError(t, err, "claiming web as inherited")
	t.Cleanup(func() { ln.Close() })
	assert.Equal(t, tcp.Addr().String(), ln.Addr().String(), "the claimed listener must be the inherited socket")
	assertServes(t, ln)

	again, err := f.Listener("web", "tcp", "127.0.0.1:0")
	assert.NoError(t, err, "a second claim is not an error")
	assert.Nil(t, again, "a second claim of one name must give nothing")

	uln, err := f.Listener("ctl", "unix", path)
	require.NoError(t, err, "claiming ctl as inherited")
	t.Cleanup(func() { uln.Close() })
	assertServes(t, uln)

	pc, err := f.PacketConn("dns", "udp", "127.0.0.1:0")
	require.NoError(t, err, "claiming dns as inherited")
	t.Cleanup(func() { pc.Close() })
	assert.Equal(t, udp.LocalAddr().String(), pc.LocalAddr().String(), "the claimed conn must be the inherited socket")
	assertPacketServes(t, pc)

	none, err := f.Listener("other", "tcp", "127.0.0.1:0")
	assert.NoError(t, err, "a name never inherited is not an error")
	assert.Nil(t, none, "a name never inherited gives nothing")
	assert.Empty(t, f.Unclaimed(), "every entry is claimed")
}

func TestOpenMismatch(t *testing.T) {
	tcp := listenTCP(t, "tcp", "127.0.0.1:0")
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
		{Name: "web", FD: dupFD(t, tcp.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
	}})
	for _, ask := range []struct{ network, address string }{
		{"tcp", "127.0.0.1:1"},
		{"tcp4", "127.0.0.1:0"},
		{"tcp", "localhost:0"},
		{"unix", "127.0.0.1:0"},
	} {
		ln, err := f.Listener("web", ask.network, ask.address)
		assert.ErrorIs(t, err, ErrMismatch, "asking for web as %s %s must be a mismatch", ask.network, ask.address)
		assert.Nil(t, ln, "a mismatch gives no listener")
		if err != nil {
			assert.Contains(t, err.Error(), "tcp 127.0.0.1:0", "the error must say how web was inherited")
			assert.Contains(t, err.Error(), ask.network+" "+ask.address, "the error must say how web was asked for")
		}
	}
	pc, err := f.PacketConn("web", "udp", "127.0.0.1:0")
	assert.ErrorIs(t, err, ErrMismatch, "asking for a tcp name as udp must be a mismatch")
	assert.Nil(t, pc, "a mismatch gives no packet conn")

	assert.Len(t, f.Unclaimed(), 1, "a mismatch must not claim the entry")
	ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
	require.NoError(t, err, "after mismatches the right request must still claim web")
	t.Cleanup(func() { ln.Close() })
	assertServes(t, ln)
}

func TestOpenBadFD(t *testing.T) {
	tests := []struct {
		name    string
		network string
		fd      func(t *testing.T) int // an fd the test closes itself, if open
		reason  string
	}{
		{"closed fd", "tcp", closedFD, "fd is not open"},
		{"regular file", "tcp", tempFile, "not a socket"},
		{"pipe", "tcp", func(t *testing.T) int {
			r, w, err := os.Pipe()
			require.NoError(t, err, "creating a pipe")
			t.Cleanup(func() { r.Close(); w.Close() })
			return ownedDup(t, r)
		}, "not a socket"},
		{"bound, not listening", "tcp", func(t *testing.T) int {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err, "creating a TCP socket")
			closeOnCleanup(t, fd)
			require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}), "binding it")
			return fd
		}, "socket is not listening"},
		{"tcp4 entry on an AF_INET6 socket", "tcp4", func(t *testing.T) int {
			ln, err := net.Listen("tcp6", "[::1]:0")
			if err != nil {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			t.Cleanup(func() { ln.Close() })
			return ownedDup(t, ln.(syscall.Conn))
		}, "is a tcp6 socket, the entry says tcp4"},
		{"udp entry on a stream socket", "udp", func(t *testing.T) int {
			return ownedDup(t, listenTCP(t, "tcp", "127.0.0.1:0").(syscall.Conn))
		}, "is a tcp4 socket, the entry says udp"},
		{"tcp entry on a datagram socket", "tcp", func(t *testing.T) int {
			return ownedDup(t, listenUDP(t).(syscall.Conn))
		}, "is a udp4 socket, the entry says tcp"},
		{"tcp entry on a unix socket", "tcp", func(t *testing.T) int {
			ln, _ := listenUnix(t)
			return ownedDup(t, ln.(syscall.Conn))
		}, "is a unix socket, the entry says tcp"},
		{"unix datagram socket", "unix", func(t *testing.T) int {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err, "creating a datagram socket pair")
			closeOnCleanup(t, fds[0], fds[1])
			return fds[0]
		}, "unsupported socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := ownedDup(t, listenTCP(t, "tcp", "127.0.0.1:0").(syscall.Conn)) // Open fails: still ours
			bad := tt.fd(t)
			f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
				{Name: "good", FD: good, Network: "tcp", Address: "127.0.0.1:0"},
				{Name: "bad", FD: bad, Network: tt.network, Address: "127.0.0.1:0"},
			}})
			assert.Nil(t, f, "Open must fail on a bad fd")
			derr := assertDecodeError(t, err, ErrBadFD, EnvFDs, 1, tt.reason)
			assert.Contains(t, derr.Error(), fmt.Sprintf("fd %d:", bad), "the error must name the fd")
			assert.Contains(t, derr.Error(), `name "bad"`, "the error must name the entry's name")
		})
	}
}

func TestOpenBadFDSystemd(t *testing.T) {
	bad := tempFile(t)
	f, err := Open(&Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1, Entries: []Entry{{Name: "web", FD: bad}}})
	assert.Nil(t, f, "Open must fail on a systemd fd that is not a socket")
	assertDecodeError(t, err, ErrBadFD, EnvListenFDs, 0, fmt.Sprintf("fd %d: not a socket", bad))
}

func TestOpenBadFDSendsFail(t *testing.T) {
	r, wfd := readyPipe(t)
	bad := tempFile(t) // not wfd: the failed Open closes it after sending
	f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd, Entries: []Entry{
		{Name: "web", FD: bad, Network: "tcp", Address: "127.0.0.1:0"},
	}})
	assert.Nil(t, f, "Open must fail on a bad fd")
	derr := assertDecodeError(t, err, ErrBadFD, EnvFDs, 0, "not a socket")
	assert.Equal(t, string(FailByte)+derr.Error(), readAll(t, r),
		"the parent must read FailByte and the error, then EOF")
}

func TestOpenBadReadyFD(t *testing.T) {
	tests := []struct {
		name   string
		fd     func(t *testing.T) int
		reason string
	}{
		{"regular file", tempFile, "not a pipe"},
		{"closed", closedFD, "fd is not open"},
		{"socket", func(t *testing.T) int {
			return ownedDup(t, listenTCP(t, "tcp", "127.0.0.1:0").(syscall.Conn))
		}, "not a pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := tt.fd(t)
			sock := ownedDup(t, listenTCP(t, "tcp", "127.0.0.1:0").(syscall.Conn)) // Open fails: still ours
			f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: ready, Entries: []Entry{
				{Name: "web", FD: sock, Network: "tcp", Address: "127.0.0.1:0"},
			}})
			assert.Nil(t, f, "Open must fail on a bad ready fd")
			assertDecodeError(t, err, ErrBadFD, EnvFDs, -1, fmt.Sprintf("ready fd %d: %s", ready, tt.reason))
		})
	}
}

func TestOpenSetsCloseOnExec(t *testing.T) {
	tcp := listenTCP(t, "tcp", "127.0.0.1:0")
	ux, path := listenUnix(t)
	udp := listenUDP(t)
	_, wfd := readyPipe(t)
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd, Entries: []Entry{
		{Name: "web", FD: dupFD(t, tcp.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
		{Name: "ctl", FD: dupFD(t, ux.(syscall.Conn)), Network: "unix", Address: path},
		{Name: "dns", FD: dupFD(t, udp.(syscall.Conn)), Network: "udp4", Address: "127.0.0.1:0"},
	}}
	all := []int{wfd, env.Entries[0].FD, env.Entries[1].FD, env.Entries[2].FD}

	// Inherited fds arrive without FD_CLOEXEC. Hold ForkLock so that no
	// other goroutine's child inherits them meanwhile.
	syscall.ForkLock.RLock()
	for _, fd := range all {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		require.NoError(t, err, "clearing FD_CLOEXEC on fd %d", fd)
	}
	f, err := Open(env)
	syscall.ForkLock.RUnlock()
	require.NoError(t, err, "Open must accept good fds")
	t.Cleanup(func() { f.CloseUnclaimed(); f.Ready(); f.Leave() })

	assert.True(t, f.HasParent(), "a ready fd means a parent waits")
	assertCloseOnExec(t, wfd, "the ready fd after Open")
	// Open made each socket a listener or packet conn: net holds a
	// duplicate, close-on-exec, and the inherited fd is closed. The test's
	// own fds, made by net, are close-on-exec too.
	for i, c := range []syscall.Conn{tcp.(syscall.Conn), ux.(syscall.Conn), udp.(syscall.Conn)} {
		fds := socketFDs(t, c)
		assert.Len(t, fds, 2, "inherited socket %s after Open: the test's fd and net's duplicate, no more", env.Entries[i].Name)
		for _, fd := range fds {
			assertCloseOnExec(t, fd, "every fd of inherited socket "+env.Entries[i].Name+" after Open")
		}
	}
}

// socketFDs lists the fds of this process that refer to the socket
// behind c, c's own included.
func socketFDs(t *testing.T, c syscall.Conn) []int {
	t.Helper()
	var target string
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) {
		target, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	}))
	require.NoError(t, err, "reading the socket's inode")
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var fds []int
	for _, e := range entries {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && link == target {
			fd, _ := strconv.Atoi(e.Name())
			fds = append(fds, fd)
		}
	}
	return fds
}

func TestCloseUnclaimed(t *testing.T) {
	tcp := listenTCP(t, "tcp", "127.0.0.1:0")
	ux, path := listenUnix(t)
	udp := listenUDP(t)
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
		{Name: "web", FD: dupFD(t, tcp.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
		{Name: "ctl", FD: dupFD(t, ux.(syscall.Conn)), Network: "unix", Address: path},
		{Name: "dns", FD: dupFD(t, udp.(syscall.Conn)), Network: "udp", Address: "127.0.0.1:0"},
	}}
	f := openFiles(t, env)
	ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
	require.NoError(t, err, "claiming web")
	t.Cleanup(func() { ln.Close() })
	assert.Equal(t, env.Entries[1:], f.Unclaimed(), "ctl and dns stay unclaimed")
	unclaimed := []syscall.Conn{ux.(syscall.Conn), udp.(syscall.Conn)}
	for i, c := range unclaimed {
		assert.Len(t, socketFDs(t, c), 2, "unclaimed %s: held by the test and by f", env.Entries[1+i].Name)
	}

	require.NoError(t, f.CloseUnclaimed(), "closing the unclaimed fds")
	for i, c := range unclaimed {
		assert.Len(t, socketFDs(t, c), 1, "unclaimed %s: held by the test alone once closed", env.Entries[1+i].Name)
	}
	assert.Empty(t, f.Unclaimed(), "nothing is left unclaimed after CloseUnclaimed")
	assert.NoError(t, f.CloseUnclaimed(), "CloseUnclaimed twice must be harmless")
	gone, err := f.Listener("ctl", "unix", path)
	assert.NoError(t, err, "claiming a closed entry is not an error")
	assert.Nil(t, gone, "a closed entry cannot be claimed")
	assertServes(t, ln)
}

func TestFDLeak(t *testing.T) {
	cycle := func() {
		tcp := listenTCP(t, "tcp", "127.0.0.1:0")
		udp := listenUDP(t)
		f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
			{Name: "web", FD: dupFD(t, tcp.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
			{Name: "dns", FD: dupFD(t, udp.(syscall.Conn)), Network: "udp", Address: "127.0.0.1:0"},
		}})
		require.NoError(t, err, "Open")
		ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
		require.NoError(t, err, "claiming web")
		assertServes(t, ln)
		require.NoError(t, ln.Close(), "closing the claimed listener")
		require.NoError(t, f.CloseUnclaimed(), "closing the rest")
		require.NoError(t, tcp.Close(), "closing the original listener")
		require.NoError(t, udp.Close(), "closing the original conn")
	}
	cycle() // warm up: the network poller opens its fds once
	before := countFDs(t)
	for range 5 {
		cycle()
	}
	assert.Equal(t, before, countFDs(t), "Open, claim and CloseUnclaimed must not leak fds")
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err, "reading /proc/self/fd")
	return len(ents)
}

func TestReady(t *testing.T) {
	r, wfd := readyPipe(t)
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd})
	assert.True(t, f.HasParent(), "a ready fd means a parent waits")
	require.NoError(t, f.Ready(), "the first Ready must succeed")
	assertCloseOnExec(t, wfd, "the ready fd after Ready, kept until Leave")
	b := make([]byte, 1)
	_, err := io.ReadFull(r, b)
	require.NoError(t, err, "reading the ready byte")
	assert.Equal(t, string(rune(ReadyByte)), string(b), "the parent must read ReadyByte first")
	assert.Error(t, f.Ready(), "a second Ready must fail")
	assert.Error(t, f.Fail(errors.New("late")), "Fail after Ready must fail")
	require.NoError(t, f.Leave(), "Leave after Ready must succeed")
	assertClosed(t, wfd, "the ready fd after Leave")
	assert.Equal(t, string(rune(LeavingByte)), readAll(t, r), "then exactly LeavingByte, then EOF")
	assert.NoError(t, f.Leave(), "a second Leave does nothing")
	assert.True(t, f.HasParent(), "HasParent does not change once readiness is sent")
}

func TestFail(t *testing.T) {
	long := strings.Repeat("x", MaxFailLen+100)
	tests := []struct {
		name   string
		reason error
		want   string
	}{
		{"reason", errors.New("port 80 is in use"), "port 80 is in use"},
		{"nil reason", nil, "unknown reason"},
		{"long reason", errors.New(long), long[:MaxFailLen]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, wfd := readyPipe(t)
			f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd})
			require.NoError(t, f.Fail(tt.reason), "Fail must write to the pipe")
			assertClosed(t, wfd, "the ready fd after Fail")
			assert.Equal(t, string(rune(FailByte))+tt.want, readAll(t, r),
				"the parent must read FailByte, the reason (at most MaxFailLen bytes), then EOF")
			assert.Error(t, f.Ready(), "Ready after Fail must fail")
			// Regression: HasParent turned false once Fail had closed the
			// pipe, so a child whose Ready failed went on serving.
			assert.True(t, f.HasParent(), "a child that failed still has a parent: it must exit")
		})
	}
}

// port is the port of addr.
func port(t *testing.T, addr net.Addr) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr.String())
	require.NoError(t, err, "splitting %s", addr)
	return p
}

func TestOpenSystemd(t *testing.T) {
	lo1 := listenTCP(t, "tcp", "127.0.0.1:0")
	lo2 := listenTCP(t, "tcp", "127.0.0.1:0")
	any1 := listenTCP(t, "tcp", ":0") // [::]:p on a dual-stack host, else 0.0.0.0:p
	any2 := listenTCP(t, "tcp", ":0")
	udp := listenUDP(t)
	ux, _ := listenUnix(t)
	env := &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1, Entries: []Entry{
		{FD: dupFD(t, lo1.(syscall.Conn))},
		{FD: dupFD(t, lo2.(syscall.Conn))},
		{FD: dupFD(t, any1.(syscall.Conn))},
		{FD: dupFD(t, any2.(syscall.Conn))},
		{FD: dupFD(t, udp.(syscall.Conn))},
		{Name: "ctl", FD: dupFD(t, ux.(syscall.Conn))},
	}}
	f := openFiles(t, env)
	assert.Equal(t, EnvListenFDs, f.Source(), "Source must be LISTEN_FDS")

	un := f.Unclaimed()
	require.Len(t, un, 6, "every systemd entry is unclaimed after Open")
	assert.Equal(t, Entry{FD: env.Entries[0].FD, Network: "tcp4", Address: lo1.Addr().String()}, un[0],
		"Open must read network and address off the socket")
	assert.Equal(t, "udp4", un[4].Network, "a UDP socket must be read as udp4")
	assert.Equal(t, udp.LocalAddr().String(), un[4].Address, "the UDP address must be read off the socket")
	assert.Equal(t, Entry{Name: "ctl", FD: env.Entries[5].FD, Network: "unix", Address: ux.Addr().String()}, un[5],
		"a unix socket must be read as unix with its path")
	assert.Empty(t, env.Entries[0].Network, "Open must not write to the caller's env")

	claim := func(name, network, address string, want net.Addr) {
		t.Helper()
		ln, err := f.Listener(name, network, address)
		require.NoError(t, err, "claiming %q %s %s", name, network, address)
		require.NotNil(t, ln, "%q %s %s must be found by address", name, network, address)
		t.Cleanup(func() { ln.Close() })
		assert.Equal(t, want.String(), ln.Addr().String(), "%s %s must give the socket bound there", network, address)
		assertServes(t, ln)
	}
	claim("web", "tcp", lo2.Addr().String(), lo2.Addr())
	claim("api", "tcp", ":"+port(t, any1.Addr()), any1.Addr())
	claim("adm", "tcp", "0.0.0.0:"+port(t, any2.Addr()), any2.Addr())

	miss, err := f.Listener("web", "tcp", "127.0.0.1:"+port(t, lo2.Addr()))
	assert.NoError(t, err, "an address already claimed is not an error")
	assert.Nil(t, miss, "an address already claimed gives nothing")
	miss, err = f.Listener("x", "udp", lo1.Addr().String())
	assert.NoError(t, err, "another family is not an error")
	assert.Nil(t, miss, "a tcp socket must not serve a udp request")
	miss, err = f.Listener("x", "tcp6", lo1.Addr().String())
	assert.NoError(t, err, "another family is not an error")
	assert.Nil(t, miss, "a tcp4 socket must not serve a tcp6 request")

	pc, err := f.PacketConn("dns", "udp", udp.LocalAddr().String())
	require.NoError(t, err, "claiming the UDP socket by address")
	require.NotNil(t, pc, "the UDP socket must be found by address")
	t.Cleanup(func() { pc.Close() })
	assertPacketServes(t, pc)

	// A named systemd socket is found by name whatever address is asked:
	// the address is systemd's to decide.
	uln, err := f.Listener("ctl", "unix", "/elsewhere.sock")
	require.NoError(t, err, "claiming ctl by name")
	require.NotNil(t, uln, "ctl must be found by name")
	t.Cleanup(func() { uln.Close() })
	assertServes(t, uln)

	ln, err := f.Listener("db", "tcp", "127.0.0.1:"+port(t, lo1.Addr()))
	require.NoError(t, err, "claiming the last socket by address")
	require.NotNil(t, ln, "lo1 must be found by address")
	t.Cleanup(func() { ln.Close() })
	assert.Empty(t, f.Unclaimed(), "everything is claimed")
}

// TestOpenSystemdEmptyNameClaimsByAddress is a regression test for a bug: systemd sockets
// without LISTEN_FDNAMES have the name "", so a request with the name ""
// matches the first one of the family by name and never looks at the
// address.
func TestOpenSystemdEmptyNameClaimsByAddress(t *testing.T) {
	lo1 := listenTCP(t, "tcp", "127.0.0.1:0")
	lo2 := listenTCP(t, "tcp", "127.0.0.1:0")
	f := openFiles(t, &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1, Entries: []Entry{
		{FD: dupFD(t, lo1.(syscall.Conn))},
		{FD: dupFD(t, lo2.(syscall.Conn))},
	}})
	ln, err := f.Listener("", "tcp", lo2.Addr().String())
	require.NoError(t, err, "claiming by address")
	require.NotNil(t, ln, "lo2 must be found by address")
	t.Cleanup(func() { ln.Close() })
	assert.Equal(t, lo2.Addr().String(), ln.Addr().String(), "the socket bound at the address asked for must be returned")
}

// TestOpenRejectsDuplicateFDs: a hand-built Env gets the checks Decode
// makes. Regression: two entries on one fd became two *os.File, and
// claiming one then closing the other closed an fd that was no longer
// ours.
func TestOpenRejectsDuplicateFDs(t *testing.T) {
	tcp := listenTCP(t, "tcp", "127.0.0.1:0")
	fd := dupFD(t, tcp.(syscall.Conn))
	t.Cleanup(func() { unix.Close(fd) })
	addr := tcp.Addr().String()
	for _, env := range []*Env{
		{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
			{Name: "a", FD: fd, Network: "tcp", Address: addr}, {Name: "b", FD: fd, Network: "tcp", Address: addr}}},
		{Source: EnvFDs, Generation: 2, ReadyFD: fd, Entries: []Entry{{Name: "a", FD: fd, Network: "tcp", Address: addr}}},
	} {
		_, err := Open(env)
		assert.ErrorIs(t, err, ErrDuplicate, "Open must refuse an fd named twice")
		_, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		assert.NoError(t, ferr, "and leave the fd alone")
	}
}

// TestOpenManySockets opens enough sockets that Open makes them on more
// than one goroutine (when GOMAXPROCS allows): every one is claimed by
// its own name and serves, and each is held once by f. A bad fd among
// them fails Open with its entry named, and Open closes no fd.
func TestOpenManySockets(t *testing.T) {
	const n = 96
	var lns []net.Listener
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: -1}
	for i := range n {
		ln := listenTCP(t, "tcp", "127.0.0.1:0")
		lns = append(lns, ln)
		env.Entries = append(env.Entries, Entry{Name: fmt.Sprintf("l%d", i), FD: dupFD(t, ln.(syscall.Conn)),
			Network: "tcp", Address: ln.Addr().String()})
	}

	bad := *env
	bad.Entries = append([]Entry(nil), env.Entries...)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	bad.Entries[n-7].FD = int(r.Fd())
	_, err = Open(&bad)
	assertDecodeError(t, err, ErrBadFD, EnvFDs, n-7, "not a socket")
	for i, en := range env.Entries {
		if i != n-7 {
			assertCloseOnExec(t, en.FD, fmt.Sprintf("entry %d, still ours after the failed Open", i))
		}
	}

	f := openFiles(t, env)
	for i := n - 1; i >= 0; i-- { // in another order than made
		ln, err := f.Listener(fmt.Sprintf("l%d", i), "tcp", lns[i].Addr().String())
		require.NoError(t, err, "claiming l%d", i)
		require.NotNil(t, ln, "l%d was inherited", i)
		t.Cleanup(func() { ln.Close() })
		assert.Equal(t, lns[i].Addr().String(), ln.Addr().String(), "l%d is its own socket", i)
		assert.Len(t, socketFDs(t, lns[i].(syscall.Conn)), 2, "l%d: held by the test and by the claimed listener", i)
		if i%16 == 0 {
			assertServes(t, ln)
		}
	}
	assert.Empty(t, f.Unclaimed(), "every socket was claimed")
}
