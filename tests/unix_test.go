package tests

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

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
