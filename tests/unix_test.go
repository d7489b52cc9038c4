package tests

import (
	"bufio"
	"fmt"
	"io"
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

// TestUnixTwoSocketsAcrossUpgrades: examples/unix on two socket paths
// under continuous load through three upgrades. No request fails; after
// each old generation has exited both socket files are still there, with
// the mode the first generation gave them, and answer; the final SIGTERM
// removes both files and the pid file.
func TestUnixTwoSocketsAcrossUpgrades(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	s := startExample(t, exampleBin("unix"), nil, "-unix", a, "-unix", b, "-mode", "0660", "-drain-timeout", "10s")
	l := startLoad([]target{{"unix", a}, {"unix", b}}, 3, 1_000_000)
	l.waitRequests(t, 200)
	for i := range 3 {
		s.upgrade() // the old generation exits 0
		for _, path := range []string{a, b} {
			fi, err := os.Lstat(path)
			require.NoError(t, err, "after upgrade %d the socket file %s must still exist", i+1, path)
			assert.Equal(t, fs.ModeSocket|0o660, fi.Mode(), "mode of %s after upgrade %d", path, i+1)
			assert.NoError(t, echoOnce("unix", path, "after-upgrade"), "%s answers after upgrade %d", path, i+1)
		}
		l.waitRequests(t, 200)
	}
	l.stopLoad(t)
	assert.Len(t, s.pids, 4, "four generations should have served")
	s.stop()
	for _, path := range []string{a, b, s.pidFile} {
		_, err := os.Lstat(path)
		assert.ErrorIs(t, err, fs.ErrNotExist, "the last generation removes %s on stop", path)
	}
}

// TestUnixFailedUpgrade: examples/unix under load on two sockets, with a
// next generation that cannot run, and with one that runs but fails at
// start (examples/unix itself, given a socket path it cannot create): each
// upgrade fails with the reason in the log, not one request fails, both
// socket files stay where they were (same inode, same mode) and answer,
// and a good build then takes over.
func TestUnixFailedUpgrade(t *testing.T) {
	cases := []struct {
		name   string
		deploy func(t *testing.T, s *server)
		reason string
	}{
		{"not a program", func(t *testing.T, s *server) {
			s.deployBytes([]byte("\x7fELF garbage, not a program"), 0o755)
		}, "exec format error"},
		{"fails at start", func(t *testing.T, s *server) {
			needShell(t)
			real := filepath.Join(s.dir, "unix.real")
			s.deployAs(exampleBin("unix"), real)
			missing := filepath.Join(s.dir, "missing", "c.sock")
			s.deployBytes([]byte(fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" -unix %s\n", real, missing)), 0o755)
		}, "the next generation failed: Listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
			s := startExample(t, exampleBin("unix"), nil, "-unix", a, "-unix", b, "-mode", "0660")
			inodes := map[string]uint64{a: fileInode(t, a), b: fileInode(t, b)}
			l := startLoad([]target{{"unix", a}, {"unix", b}}, 2, 1_000_000)
			l.waitRequests(t, 100)
			tc.deploy(t, s)
			for range 2 { // and again: the failure left nothing behind
				s.failUpgrade(tc.reason)
				l.waitRequests(t, 100)
				for path, ino := range inodes {
					fi, err := os.Lstat(path)
					require.NoError(t, err, "the socket file %s stays after a failed upgrade", path)
					assert.Equal(t, fs.ModeSocket|0o660, fi.Mode(), "mode of %s after a failed upgrade", path)
					assert.Equal(t, ino, fileInode(t, path), "%s is the same socket file after a failed upgrade", path)
				}
			}
			s.deploy(exampleBin("unix"))
			s.upgrade()
			l.waitRequests(t, 100)
			l.stopLoad(t)
			s.stop()
		})
	}
}

// TestUnixDrainDeadline: examples/unix with -drain-timeout 500ms and a
// client that never closes its connection: after an upgrade, and on
// SIGINT, the generation that leaves keeps serving it until the deadline,
// then closes it and exits 0. After the upgrade the socket files stay for
// the new generation; on SIGINT they go as the drain starts.
func TestUnixDrainDeadline(t *testing.T) {
	const drain = 500 * time.Millisecond
	for _, how := range []string{"upgrade", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			a := filepath.Join(t.TempDir(), "a.sock")
			s := startExample(t, exampleBin("unix"), nil, "-unix", a, "-drain-timeout", drain.String())
			c, err := dial("unix", a)
			require.NoError(t, err)
			defer c.Close()
			r := bufio.NewReader(c)
			require.NoError(t, echoOnConn(c, r, "hello"), "the first generation serves the client")
			old := s.pid()
			begin := time.Now()
			if how == "upgrade" {
				s.startUpgrade()
				require.NoError(t, echoOnce("unix", a, "new"), "the new generation serves new clients")
			} else {
				require.NoError(t, syscall.Kill(old, syscall.SIGINT))
				waitLog(t, s, fmt.Sprintf(`msg="shutting down" pid=%d `, old))
				_, err := os.Lstat(a)
				assert.ErrorIs(t, err, fs.ErrNotExist, "SIGINT removes the socket file as the drain starts")
			}
			require.NoError(t, echoOnConn(c, r, "draining"), "the open connection is served while its generation drains")
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			_, err = r.ReadString('\n')
			assert.ErrorIs(t, err, io.EOF, "the connection is closed at the drain deadline")
			assert.GreaterOrEqual(t, time.Since(begin), drain, "not before the drain deadline")
			s.waitExit(old, 0)
			if how == "upgrade" {
				assert.NoError(t, echoOnce("unix", a, "after"), "the socket file still reaches the new generation")
			}
		})
	}
}

// echoOnConn sends line on c and reads its echo from r within requestBudget.
func echoOnConn(c net.Conn, r *bufio.Reader, line string) error {
	c.SetDeadline(time.Now().Add(requestBudget))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err == nil && got != line+"\n" {
		err = fmt.Errorf("sent %q, got %q", line, got)
	}
	return err
}

// fileInode is the inode number of the file at path.
func fileInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}
