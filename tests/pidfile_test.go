package tests

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nobody is the unprivileged user the tests run servers as.
const nobody = 65534

// TestPIDFileInRootOwnedDirectory: the pid file was made for the service's
// user inside a directory only root may write (the /run/app.pid layout);
// the server, running as that user, writes its pid in place, every upgrade
// succeeds under load, and a stop empties the file it may not remove.
// Before, Ready's temp file could not be created there, so every upgrade
// failed.
func TestPIDFileInRootOwnedDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server runs as another user (uid 65534) beside a root-owned directory")
	}
	run := t.TempDir() // the root-owned directory
	pidFile := filepath.Join(run, "lineserver.pid")
	require.NoError(t, os.WriteFile(pidFile, nil, 0o644))
	require.NoError(t, os.Chown(pidFile, nobody, nobody))
	bin := filepath.Join(t.TempDir(), "lineserver")
	require.NoError(t, copyExecutable(bin, lineserverBin, 0o755))
	for _, dir := range []string{run, filepath.Dir(run), filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		require.NoError(t, os.Chmod(dir, 0o755)) // others may enter, only root may write
	}
	s := launch(t, lineserverBin, launchOpts{bin: bin, pidFile: pidFile, cred: &syscall.Credential{Uid: nobody, Gid: nobody}},
		"-tcp", "127.0.0.1:0")
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	for range 3 {
		s.upgrade() // fails unless the new generation writes its pid into the file
		l.waitRequests(t, 100)
	}
	l.stopLoad(t)
	s.stop()
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err, "the pid file stays: the server may not remove it")
	assert.Empty(t, string(data), "a stop empties the pid file it cannot remove, so it names no process")
}
