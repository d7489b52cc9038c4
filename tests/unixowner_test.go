package tests

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// otherServer stands in for another program's server at path, after
// someone removed our socket file there and that server bound the path
// anew (a new inode). It accepts and closes connections until the test
// ends, and returns the inode of its file.
func otherServer(t *testing.T, path string) uint64 {
	t.Helper()
	require.NoError(t, os.Remove(path), "removing our socket file at %s", path)
	ln, err := net.Listen("unix", path)
	require.NoError(t, err, "another server binds %s", path)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return fileInode(t, path)
}

// assertOtherServerFile checks that the other server's file at path is
// still there, the same inode, and reaches it.
func assertOtherServerFile(t *testing.T, path string, ino uint64) {
	t.Helper()
	_, err := os.Lstat(path)
	require.NoError(t, err, "the other server's socket file %s must not be removed", path)
	assert.Equal(t, ino, fileInode(t, path), "%s is still the other server's file", path)
	c, err := dial("unix", path)
	if assert.NoError(t, err, "%s still reaches the other server", path) {
		c.Close()
	}
}

// TestUnixOwnerFollowsInodeAcrossUpgrade pins issue #10's "a Unix socket
// file of another server gets deleted": the socket file was replaced by
// another server's while the first generation served; after an upgrade
// the new generation took whatever file was at the path when it started
// for its own, and its stop removed the other server's file. The owner
// check now follows the inode the socket was bound to, carried in the
// hand-off.
func TestUnixOwnerFollowsInodeAcrossUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
	require.NoError(t, echoOnce("unix", sock, "ours"), "the first generation serves its socket file")
	ino := otherServer(t, sock)
	s.upgrade()
	s.upgrade() // and once more: the inode is handed on, not re-read
	assertOtherServerFile(t, sock, ino)
	s.stop()
	assertOtherServerFile(t, sock, ino)
}

// TestUnclaimedUnixSocketReleased pins issue #10's "a listener that a new
// version no longer asks for leaves its socket file behind forever": the
// new generation now closes an inherited socket nobody claimed at Ready
// and removes its file if the chain created it and the path still leads
// to it; a file that another server put there meanwhile stays.
func TestUnclaimedUnixSocketReleased(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	needShell(t)
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock"), filepath.Join(dir, "c.sock")
	s := startServer(t, nil, "-unix", a, "-unix", b, "-unix", c)
	for _, path := range []string{a, b, c} {
		require.NoError(t, echoOnce("unix", path, "before"), "the first generation serves %s", path)
	}
	ino := otherServer(t, c)
	real := filepath.Join(s.dir, "lineserver.real")
	version := s.deployAs(lineserverBin, real)
	// The next version serves a only.
	s.deployBytes([]byte(fmt.Sprintf("#!/bin/sh\nexec %s -pidfile %s -unix %s\n", real, s.pidFile, a)), 0o755)
	old := s.pid()
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	var pid int
	waitFor(t, fmt.Sprintf("a new generation after %d\nlogs:\n%s", old, s.logs), func() bool {
		pid = s.pid()
		return pid != 0 && pid != old
	})
	s.mu.Lock()
	s.pids = append(s.pids, pid)
	s.mu.Unlock()
	s.waitReadyLog(pid)
	s.upgraded(pid, version, real)
	s.waitExit(old, 0)
	assert.NoError(t, echoOnce("unix", a, "after"), "the new generation serves a")
	_, err := os.Lstat(b)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the file of b, which the new version no longer serves, is removed")
	assertOtherServerFile(t, c, ino)
	s.stop()
	_, err = os.Lstat(a)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the last generation removes a on stop")
}
