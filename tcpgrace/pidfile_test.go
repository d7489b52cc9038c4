//go:build linux

package tcpgrace

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ourPIDLine() string { return strconv.Itoa(os.Getpid()) + "\n" }

func TestReadyWritesPIDFileAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	// A pid file left by an earlier run: Ready must replace it by rename,
	// never rewrite it in place, or a reader could see a partial pid.
	require.NoError(t, os.WriteFile(path, []byte("999999999\n"), 0o600))
	oldIno := inode(t, path)

	u := newColdUpgrader(t, Options{PIDFile: path})
	require.NoError(t, u.Ready(), "Ready should write the pid file")
	b, err := os.ReadFile(path)
	require.NoError(t, err, "the pid file should exist after Ready")
	assert.Equal(t, ourPIDLine(), string(b), "the pid file should hold our pid")
	assert.NotEqual(t, oldIno, inode(t, path), "the pid file should be a new file renamed into place")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "the pid file should be readable by all")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"app.pid"}, names, "no temporary file should be left next to the pid file")

	held := func() (n int) {
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, e := range fds {
			if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link == path || link == path+" (deleted)" {
				n++
			}
		}
		return n
	}
	assert.Equal(t, 1, held(), "the generation holds its pid file open, for the next one's rename")

	require.NoError(t, u.Shutdown(context.Background()))
	_, err = os.Stat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "Shutdown should remove a pid file that holds our pid")
	assert.Zero(t, held(), "Shutdown lets the pid file go")
}

func TestShutdownLeavesForeignPIDFile(t *testing.T) {
	for _, stop := range []string{"Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.pid")
			u := newColdUpgrader(t, Options{PIDFile: path})
			require.NoError(t, u.Ready(), "Ready should write the pid file")
			// The next generation (here: a pid that is not ours) took over.
			require.NoError(t, os.WriteFile(path, []byte("1\n"), 0o644))
			if stop == "Shutdown" {
				require.NoError(t, u.Shutdown(context.Background()))
			} else {
				require.NoError(t, u.Close())
			}
			b, err := os.ReadFile(path)
			require.NoError(t, err, "%s should leave a pid file that names another process", stop)
			assert.Equal(t, "1\n", string(b), "%s should not touch another process's pid file", stop)
		})
	}
}

func TestShutdownWithoutPIDFileWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	u := newColdUpgrader(t, Options{PIDFile: path})
	assert.NoError(t, u.Shutdown(context.Background()), "Shutdown before Ready, with no pid file yet, should succeed")
	_, err := os.Stat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "Shutdown should not create a pid file")
}

func TestReadyPIDFileInMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "app.pid")
	u := newColdUpgrader(t, Options{PIDFile: path})
	err := u.Ready()
	require.Error(t, err, "Ready should fail when the pid file cannot be written")
	assert.ErrorIs(t, err, os.ErrNotExist, "the error should say the directory does not exist")
	assert.Contains(t, err.Error(), path, "the error should name the pid file's path")
	_, err = os.Stat(filepath.Dir(path))
	assert.ErrorIs(t, err, os.ErrNotExist, "Ready should not create the missing directory")
}
