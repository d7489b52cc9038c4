//go:build unix

package bind

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ioTimeout = 5 * time.Second

// assertAccepts dials ln and checks that it accepts the connection.
func assertAccepts(t *testing.T, ln net.Listener) {
	t.Helper()
	c, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), ioTimeout)
	require.NoError(t, err, "dialing the new listener should succeed")
	defer c.Close()
	require.NoError(t, ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(ioTimeout)))
	sc, err := ln.Accept()
	require.NoError(t, err, "the new listener should accept")
	sc.Close()
}

// staleSocket leaves a socket file at path that nobody listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	require.NoError(t, err, "creating the stale socket should succeed")
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
}

func TestListen(t *testing.T) {
	for _, tc := range []struct {
		network, address string
		file             bool
	}{
		{"tcp", "127.0.0.1:0", false},
		{"tcp4", "127.0.0.1:0", false},
		{"unix", "s.sock", true},
		{"unix", "@tcpgrace-bind-test-" + time.Now().Format("150405.000000000"), false},
	} {
		t.Run(tc.network+" "+tc.address, func(t *testing.T) {
			address := tc.address
			if tc.file {
				address = filepath.Join(t.TempDir(), address)
			}
			ln, f, err := Listen(tc.network, address, 0o600)
			require.NoError(t, err, "Listen should bind")
			defer ln.Close()
			assertAccepts(t, ln)
			if !tc.file {
				assert.Nil(t, f, "a socket with no file should return no File")
				return
			}
			require.NotNil(t, f, "a Unix socket file should be returned")
			assert.Equal(t, Stat(address), f, "the File should be the socket file now at the path")
		})
	}
}

func TestListenPacket(t *testing.T) {
	for _, network := range []string{"udp", "udp4"} {
		t.Run(network, func(t *testing.T) {
			pc, err := ListenPacket(network, "127.0.0.1:0")
			require.NoError(t, err, "ListenPacket should bind")
			defer pc.Close()
			c, err := net.Dial("udp", pc.LocalAddr().String())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("x"))
			require.NoError(t, err)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(ioTimeout)))
			b := make([]byte, 1)
			n, _, err := pc.ReadFrom(b)
			require.NoError(t, err, "the packet conn should receive the datagram")
			assert.Equal(t, "x", string(b[:n]))
		})
	}
}

func TestListenUnixExisting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, path string) func()
		wantErr  bool
		wantBusy bool
	}{
		{"stale socket replaced", func(t *testing.T, path string) func() { staleSocket(t, path); return func() {} }, false, false},
		{"live socket refused", func(t *testing.T, path string) func() {
			live, err := net.Listen("unix", path)
			require.NoError(t, err, "starting the live server should succeed")
			return func() { live.Close() }
		}, true, true},
		{"regular file refused", func(t *testing.T, path string) func() {
			require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o640))
			return func() {}
		}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			defer tc.setup(t, path)()
			before, err := os.Lstat(path)
			require.NoError(t, err, "precondition: a file is at the path")
			ln, f, err := Listen("unix", path, 0o600)
			if !tc.wantErr {
				require.NoError(t, err, "Listen should replace a stale socket file")
				defer ln.Close()
				assert.Equal(t, Stat(path), f)
				assertAccepts(t, ln)
				return
			}
			require.Error(t, err, "Listen should refuse the path")
			assert.Equal(t, tc.wantBusy, errors.Is(err, syscall.EADDRINUSE), "EADDRINUSE in %v", err)
			after, serr := os.Lstat(path)
			require.NoError(t, serr, "the file should be left in place")
			assert.True(t, os.SameFile(before, after), "the file should be the same one")
			assert.Equal(t, before.Mode(), after.Mode(), "its mode should be untouched")
		})
	}
}

func TestListenUnixMode(t *testing.T) {
	for _, mode := range []fs.FileMode{0o600, 0o660, 0o666, 0o700} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			ln, _, err := Listen("unix", path, mode)
			require.NoError(t, err, "Listen should bind")
			defer ln.Close()
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.Equal(t, os.ModeSocket, fi.Mode().Type(), "the file should be a socket")
			assert.Equal(t, mode, fi.Mode().Perm(), "the socket file should have the mode asked for")
		})
	}
}

// TestListenUnixModeBeforeListen dials the path while Listen binds it:
// the first connection that gets in must find the mode already set.
func TestListenUnixModeBeforeListen(t *testing.T) {
	for range 20 {
		path := filepath.Join(t.TempDir(), "s.sock")
		seen := make(chan fs.FileMode, 1)
		stop := make(chan struct{})
		go func() {
			defer close(seen)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c, err := net.Dial("unix", path); err == nil {
					fi, _ := os.Lstat(path)
					c.Close()
					if fi != nil {
						seen <- fi.Mode().Perm()
					}
					return
				}
			}
		}()
		ln, _, err := Listen("unix", path, 0o640)
		require.NoError(t, err, "Listen should bind")
		mode, ok := <-seen
		close(stop)
		ln.Close()
		if ok {
			assert.Equal(t, fs.FileMode(0o640), mode, "a client got in before the mode was set")
		}
	}
}

func TestFileRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, f, err := Listen("unix", path, 0o600)
	require.NoError(t, err)
	defer ln.Close()
	// Moved away rather than removed, so that the inode is not reused.
	require.NoError(t, os.Rename(path, path+".moved"))
	other, err := net.Listen("unix", path)
	require.NoError(t, err, "binding the freed path should succeed")
	defer other.Close()
	assert.False(t, f.Remove(), "Remove should leave a file that another socket put at the path")
	_, err = os.Lstat(path)
	assert.NoError(t, err, "the other socket's file should still be there")

	g := Stat(path)
	require.NotNil(t, g)
	assert.True(t, g.Remove(), "Remove should remove the file it identifies")
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Nil(t, Stat("@abstract"), "an abstract socket has no file")
}
