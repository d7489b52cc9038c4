//go:build linux

package tcpgrace

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st), "%s should exist", path)
	return st.Ino
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
	_, err = net.DialTimeout("unix", sock, ioTimeout)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "precondition: nobody listens on the stale socket file")

	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err, "Listen should replace a stale socket file")
	fi, err := os.Lstat(sock)
	require.NoError(t, err, "the new socket file should exist")
	assert.Equal(t, os.ModeSocket, fi.Mode().Type(), "the path should hold a socket")
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

// TestFailedChildKeepsParentUnixSocketFile pins a bug: a next generation
// that inherited a Unix socket and gives up before Ready (Fail, then the
// usual deferred Close on its way out) unlinks the socket file that its
// parent, which keeps serving after the failed upgrade, still listens on.
// New clients of the parent then find no file at the path.
func TestFailedChildKeepsParentUnixSocketFile(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := parent.Listen("ctl", "unix", sock)
	require.NoError(t, err)

	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC), "creating the readiness pipe should succeed")
	r := os.NewFile(uintptr(p[0]), "ready-r")
	defer r.Close()
	env := &wire.Env{Source: wire.EnvFDs, Generation: 2, ReadyFD: p[1], Entries: []wire.Entry{
		{Name: "ctl", FD: rawDup(t, ctl.(syscall.Conn)), Network: "unix", Address: sock},
	}}
	files, err := wire.Open(env)
	require.NoError(t, err)
	child, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	require.True(t, child.inh.HasParent(), "precondition: the child has a parent waiting for it")
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

// inheritedChild builds, in this process, a next generation that inherited
// ln under name: env as its parent would write it, plus the parent's end
// of the readiness pipe.
func inheritedChild(t *testing.T, opts Options, env *wire.Env, name, network, addr string, ln syscall.Conn) (*Upgrader, *os.File) {
	t.Helper()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC), "creating the readiness pipe should succeed")
	r := os.NewFile(uintptr(p[0]), "ready-r")
	t.Cleanup(func() { r.Close() })
	env.ReadyFD = p[1]
	env.Entries = []wire.Entry{{Name: name, FD: rawDup(t, ln), Network: network, Address: addr}}
	files, err := wire.Open(env)
	require.NoError(t, err)
	child, err := newUpgrader(opts, files)
	require.NoError(t, err)
	t.Cleanup(func() { child.Close() })
	return child, r
}

// TestFailedReadyKeepsParentUnixSocketFile: a next generation whose Ready
// fails (its pid file cannot be written) has not taken over; its Close on
// the way out must leave the socket file the parent still serves.
// Regression: Ready counted the generation as ready before it had told
// its parent, and Close then removed the file.
func TestFailedReadyKeepsParentUnixSocketFile(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := parent.Listen("ctl", "unix", sock)
	require.NoError(t, err)
	opts := Options{PIDFile: filepath.Join(t.TempDir(), "missing", "x.pid")}
	child, r := inheritedChild(t, opts, &wire.Env{Source: wire.EnvFDs, Generation: 2}, "ctl", "unix", sock, ctl.(syscall.Conn))
	_, err = child.Listen("ctl", "unix", sock)
	require.NoError(t, err)
	require.Error(t, child.Ready(), "Ready must fail: the pid file's directory is missing")
	msg, _ := io.ReadAll(r)
	assert.Contains(t, string(msg), "writing pid file", "the parent hears why")
	assert.ErrorIs(t, child.Upgrade(context.Background()), ErrNotReady, "a generation whose Ready failed may not upgrade")
	child.Close()
	_, err = os.Lstat(sock)
	assert.NoError(t, err, "the parent's socket file survives the child whose Ready failed")
	assertAccepts(t, ctl, "the parent, still serving")
}

// TestForeignSocketFileNeverRemoved: a Unix socket whose file belongs to
// systemd (inherited through LISTEN_FDS, or listed in keep by a parent
// that had it from systemd) is never removed, not even by the last
// generation's Shutdown, and is listed in keep for the next generation.
func TestForeignSocketFileNeverRemoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  *wire.Env
	}{
		{"systemd", &wire.Env{Source: wire.EnvListenFDs, Generation: 1}},
		{"keep", &wire.Env{Source: wire.EnvFDs, Generation: 2, Keep: []string{"ctl"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			owner, err := net.Listen("unix", sock) // systemd's socket
			require.NoError(t, err)
			owner.(*net.UnixListener).SetUnlinkOnClose(false)
			defer owner.Close()
			child, _ := inheritedChild(t, Options{}, tc.env, "ctl", "unix", sock, owner.(syscall.Conn))
			ln, err := child.Listen("ctl", "unix", sock)
			require.NoError(t, err)
			require.NoError(t, child.Ready())
			child.mu.Lock()
			s := child.sockets["ctl"]
			child.mu.Unlock()
			assert.True(t, s.foreign, "the socket is marked as someone else's, so the next generation is told (keep)")
			ln.Close()
			require.NoError(t, child.Shutdown(context.Background()))
			_, err = os.Lstat(sock)
			assert.NoError(t, err, "the socket file stays with its owner")
		})
	}
}
