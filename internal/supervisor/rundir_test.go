//go:build linux

package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRemoveStaleRunDirs: a runtime directory whose lock nobody holds is
// removed; one whose lock is held (by this process here, through another
// open file), one without a lock file (being made, or made by an older
// build) and other files are left alone.
func TestRemoveStaleRunDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	log := slog.New(slog.DiscardHandler)
	live, liveLock, err := makeRunDir(log)
	require.NoError(t, err)
	defer liveLock.Close()
	stale, staleLock, err := makeRunDir(log)
	require.NoError(t, err)
	staleLock.Close() // as the kernel does when its supervisor is killed
	lockless := filepath.Join(tmp, "tcpgrace-run-old")
	require.NoError(t, os.Mkdir(lockless, 0o700))
	plain := filepath.Join(tmp, "tcpgrace-run-file")
	require.NoError(t, os.WriteFile(plain, nil, 0o600))
	assert.NoFileExists(t, filepath.Join(live, lockName+".new"), "the lock file is renamed into place")

	removeStaleRunDirs(tmp, log)
	assert.NoDirExists(t, stale, "its lock is free: its supervisor is gone")
	assert.FileExists(t, filepath.Join(live, lockName), "a held lock: a live supervisor")
	assert.DirExists(t, lockless)
	assert.FileExists(t, plain)
}
