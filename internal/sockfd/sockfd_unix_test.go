//go:build unix

package sockfd

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fcntl reads F_GETFD or F_GETFL of the fd behind c, on the fd itself.
func fcntl(t *testing.T, c syscall.Conn, cmd int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	v, ferr := 0, error(nil)
	require.NoError(t, rc.Control(func(fd uintptr) { v, ferr = unix.FcntlInt(fd, cmd, 0) }))
	require.NoError(t, ferr)
	return v
}

// TestDup: each kind of socket is duplicated at or above the lowest fd
// asked for, close-on-exec, the same socket (same inode), and the
// original stays non-blocking: it is not switched to blocking mode as
// (*net.TCPListener).File would.
func TestDup(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer udp.Close()
	ux, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	defer ux.Close()

	for name, c := range map[string]syscall.Conn{"tcp": tcp.(syscall.Conn), "udp": udp.(syscall.Conn), "unix": ux.(syscall.Conn)} {
		for _, lowest := range []int{0, 3, 100} {
			fd, err := Dup(c, lowest)
			require.NoError(t, err, "%s: Dup(%d)", name, lowest)
			assert.GreaterOrEqual(t, fd, lowest, "%s: the fd is at or above the lowest asked for", name)
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			require.NoError(t, err)
			assert.NotZero(t, flags&unix.FD_CLOEXEC, "%s: the duplicate is close-on-exec", name)
			var a, b unix.Stat_t
			require.NoError(t, unix.Fstat(fd, &a))
			rc, _ := c.SyscallConn()
			rc.Control(func(s uintptr) { unix.Fstat(int(s), &b) })
			assert.Equal(t, b.Ino, a.Ino, "%s: the same socket", name)
			assert.NotZero(t, fcntl(t, c, unix.F_GETFL)&unix.O_NONBLOCK, "%s: the original stays non-blocking", name)
			unix.Close(fd)
		}
	}
}

// TestDupClosed: a closed socket cannot be duplicated, and no fd is
// returned.
func TestDupClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln.Close()
	fd, err := Dup(ln.(syscall.Conn), 3)
	assert.Error(t, err, "a closed socket")
	assert.Equal(t, -1, fd)
}

// TestStatAndSocketFile: Stat follows symlinks to any file; SocketFile
// takes only a socket file, and the path itself.
func TestStatAndSocketFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer ln.Close()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(sock, link))
	missing := filepath.Join(dir, "missing")

	ids := map[string]FileID{}
	for _, p := range []string{sock, plain} {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(p, &st))
		ids[p] = FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}
	}
	for _, c := range []struct {
		name, path string
		stat       FileID // zero: an error
		socket     bool
	}{
		{"socket", sock, ids[sock], true},
		{"regular file", plain, ids[plain], false},
		{"symlink to the socket", link, ids[sock], false},
		{"missing", missing, FileID{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := Stat(c.path)
			if c.stat == (FileID{}) {
				assert.ErrorIs(t, err, os.ErrNotExist)
			} else {
				require.NoError(t, err)
				assert.Equal(t, c.stat, id, "Stat follows symlinks")
			}
			id, ok := SocketFile(c.path)
			assert.Equal(t, c.socket, ok, "a socket file, not through a symlink")
			if c.socket {
				assert.Equal(t, c.stat, id)
			} else {
				assert.Equal(t, FileID{}, id)
			}
		})
	}
	require.NoError(t, os.Remove(sock))
	ln2, err := net.Listen("unix", sock)
	require.NoError(t, err, "another socket at the same path")
	defer ln2.Close()
	id, ok := SocketFile(sock)
	require.True(t, ok)
	assert.NotEqual(t, ids[sock], id, "another file at the same path has another FileID")
}

// TestSocketpair: both ends are close-on-exec, of the type asked for, and
// connected to each other.
func TestSocketpair(t *testing.T) {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET, unix.SOCK_STREAM} {
		fds, err := Socketpair(typ)
		require.NoError(t, err)
		for _, fd := range fds {
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			require.NoError(t, err)
			assert.NotZero(t, flags&unix.FD_CLOEXEC, "fd %d is close-on-exec", fd)
			got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
			require.NoError(t, err)
			assert.Equal(t, typ, got)
		}
		_, err = unix.Write(fds[0], []byte("x"))
		require.NoError(t, err)
		buf := make([]byte, 1)
		n, err := unix.Read(fds[1], buf)
		require.NoError(t, err)
		assert.Equal(t, "x", string(buf[:n]), "the ends are connected")
		unix.Close(fds[0])
		unix.Close(fds[1])
	}
}
