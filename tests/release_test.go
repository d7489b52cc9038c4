package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReleaseSymlinkDeploy: a server started through a "current ->
// releases/v1" symlink upgrades to the release the symlink points to at
// the time of the upgrade, under load, and back again. Before, the
// default executable was os.Executable(), which resolved the symlink at
// start: every upgrade re-ran releases/v1 and reported success.
func TestReleaseSymlinkDeploy(t *testing.T) {
	root := t.TempDir()
	for _, v := range versions {
		dir := filepath.Join(root, "releases", v)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, copyExecutable(filepath.Join(dir, "lineserver"), filepath.Join(binDir, v, "lineserver"), 0o755))
	}
	current := filepath.Join(root, "current")
	switchRelease(t, current, versions[0])
	bin := filepath.Join(current, "lineserver")
	s := launch(t, lineserverBin, launchOpts{bin: bin}, "-tcp", "127.0.0.1:0")
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	for _, v := range []string{versions[1], versions[0], versions[1]} {
		switchRelease(t, current, v)
		old := s.pid()
		require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
		var pid int
		waitFor(t, "a new generation", func() bool { pid = s.pid(); return pid != 0 && pid != old })
		s.mu.Lock()
		s.pids = append(s.pids, pid)
		s.mu.Unlock()
		s.waitReadyLog(pid)
		s.checkRuns(pid, v, bin) // its start line says v, and /proc/PID/exe is releases/v/lineserver
		assert.Contains(t, s.logs.String(), "file="+filepath.Join(root, "releases", v, "lineserver"),
			"the upgrade's log line names the file that runs")
		s.waitExit(old, 0)
		l.waitRequests(t, 100)
	}
	l.stopLoad(t)
	assert.False(t, strings.Contains(s.logs.String(), "upgrade failed"))
}

// switchRelease points the symlink current at releases/version the way a
// deploy does: a new symlink renamed over the old one.
func switchRelease(t *testing.T, current, version string) {
	t.Helper()
	tmp := current + ".new"
	os.Remove(tmp)
	require.NoError(t, os.Symlink(filepath.Join("releases", version), tmp))
	require.NoError(t, os.Rename(tmp, current))
}
