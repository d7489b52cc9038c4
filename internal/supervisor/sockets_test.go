//go:build linux

package supervisor

import (
	"io"
	"log/slog"
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

// activation is what systemd would pass: a copy of each listener as an
// fd, named.
func activation(t *testing.T, names []string, lns ...net.Listener) *wire.Files {
	t.Helper()
	env := &wire.Env{Source: wire.EnvListenFDs, Generation: 1, ReadyFD: -1}
	for i, ln := range lns {
		rc, err := ln.(syscall.Conn).SyscallConn()
		require.NoError(t, err)
		var fd int
		require.NoError(t, rc.Control(func(raw uintptr) { fd, err = unix.Dup(int(raw)) }))
		require.NoError(t, err)
		env.Entries = append(env.Entries, wire.Entry{Name: names[i], FD: fd})
	}
	files, err := wire.Open(env)
	require.NoError(t, err, "opening the activation should succeed")
	return files
}

// TestBindFromActivation: activated sockets are taken by name, then by
// address; one nobody asks for is closed; the others are bound anew, and
// only the Unix socket files bound anew are removed when closed.
func TestBindFromActivation(t *testing.T) {
	dir := t.TempDir()
	byName, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer byName.Close()
	byAddr, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer byAddr.Close()
	unused, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	activatedPath := filepath.Join(dir, "activated.sock")
	activatedUnix, err := net.Listen("unix", activatedPath)
	require.NoError(t, err)
	activatedUnix.(*net.UnixListener).SetUnlinkOnClose(false)
	defer activatedUnix.Close()
	inh := activation(t, []string{"web", "", "unused", "api"}, byName, byAddr, unused, activatedUnix)

	freshPath := filepath.Join(dir, "fresh.sock")
	ls := []Listen{
		{Name: "web", Network: "tcp", Address: "127.0.0.1:1"}, // systemd's address wins
		{Name: "other", Network: "tcp", Address: byAddr.Addr().String()},
		{Name: "api", Network: "unix", Address: activatedPath},
		{Name: "fresh", Network: "unix", Address: freshPath},
	}
	b, err := bindFrom(inh, ls, filepath.Join(dir, "ctl.sock"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err, "binding should succeed")
	require.Len(t, b.socks, 4)
	assert.Equal(t, byName.Addr().String(), b.socks[0].addr, "the socket named web should be taken by name")
	assert.Equal(t, byAddr.Addr().String(), b.socks[1].addr, "the unnamed socket should be taken by address")
	assert.Nil(t, b.socks[2].owned, "an activated socket file should not be ours")
	require.NotNil(t, b.socks[3].owned, "a socket file bound anew should be ours")
	require.NotNil(t, b.ctlOwned, "the control socket bound anew should be ours")
	fi, err := os.Lstat(freshPath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(socketMode), fi.Mode().Perm(), "a socket file bound anew should have socketMode")

	require.NoError(t, unused.Close())
	_, err = net.DialTimeout("tcp", unused.Addr().String(), time.Second)
	assert.Error(t, err, "the activated socket nobody asked for should be closed")

	b.ctl.Close()
	require.NoError(t, closeSockets(b.socks), "closing the sockets should succeed")
	_, err = os.Lstat(freshPath)
	assert.ErrorIs(t, err, os.ErrNotExist, "the socket file bound anew should be removed")
	_, err = os.Lstat(activatedPath)
	assert.NoError(t, err, "the activated socket file should be left")
	assert.NoError(t, closeSockets(b.socks), "closing again should do nothing")
}

// TestBindFromLiveUnixSocket: a live socket file is refused, and what
// was bound before it is released.
func TestBindFromLiveUnixSocket(t *testing.T) {
	dir := t.TempDir()
	live, err := net.Listen("unix", filepath.Join(dir, "live.sock"))
	require.NoError(t, err)
	defer live.Close()
	first := filepath.Join(dir, "first.sock")
	ls := []Listen{
		{Name: "first", Network: "unix", Address: first},
		{Name: "live", Network: "unix", Address: live.Addr().String()},
	}
	inh, err := wire.Open(nil)
	require.NoError(t, err)
	_, err = bindFrom(inh, ls, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorIs(t, err, unix.EADDRINUSE, "a live socket file should be refused")
	assert.Contains(t, err.Error(), "-listen live=unix://", "the error should name the -listen")
	_, err = os.Lstat(first)
	assert.ErrorIs(t, err, os.ErrNotExist, "the socket bound before the failure should be released")
}
