package tests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRollback: every way a next generation can fail to start leaves the
// old one serving without a single failed request, and a later upgrade
// to a good binary works.
func TestRollback(t *testing.T) {
	needShell(t, "sleep")
	self, err := os.Executable()
	require.NoError(t, err)
	cases := []struct {
		name   string
		deploy func(t *testing.T, s *server)
		reason string
	}{
		{"missing", func(t *testing.T, s *server) { require.NoError(t, os.Remove(s.bin)) }, "no such file or directory"},
		{"not executable", func(t *testing.T, s *server) { s.deployCopy(self, 0o644) }, "permission denied"},
		{"still being written", func(t *testing.T, s *server) {
			selfBin := readFile(t, self)
			require.NoError(t, os.Remove(s.bin)) // the running binary's file cannot be opened for writing
			f, err := os.OpenFile(s.bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			_, err = f.Write(selfBin[:len(selfBin)/2]) // a copy under way, not yet closed
			require.NoError(t, err)
		}, "text file busy"},
		{"not a binary", func(t *testing.T, s *server) { s.deployBytes([]byte("\x7fELF garbage, not a program"), 0o755) }, "exec format error"},
		{"exits before ready", func(t *testing.T, s *server) { s.deployBytes([]byte("#!/bin/sh\nexit 3\n"), 0o755) }, "exit status 3"},
		{"crashes before ready", func(t *testing.T, s *server) { s.deployBytes([]byte("#!/bin/sh\nkill -SEGV $$\n"), 0o755) }, "signal: segmentation fault"},
		{"killed before ready", func(t *testing.T, s *server) { s.deployBytes([]byte("#!/bin/sh\nkill -KILL $$\n"), 0o755) }, "signal: killed"},
		{"reports its failure", func(t *testing.T, s *server) { s.deployCopy(self, 0o755) }, "e2e: refusing to start: config broken"},
		{"never ready", func(t *testing.T, s *server) { s.deployBytes([]byte("#!/bin/sh\nexec sleep 60\n"), 0o755) }, "not ready in time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			s := startServer(t, []string{roleEnv + "=fail"}, "-tcp", "127.0.0.1:0", "-unix", sock, "-ready-timeout", "500ms")
			l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}, {"unix", sock}}, 2, 1_000_000)
			l.waitRequests(t, 100)
			first := s.pid()
			tc.deploy(t, s)
			s.failUpgrade(tc.reason)
			l.waitRequests(t, 100)
			s.failUpgrade(tc.reason) // and again: the failure left nothing behind
			l.waitRequests(t, 100)
			s.deploy(lineserverBin)
			assert.NotEqual(t, first, s.upgrade(), "a good binary takes over after the failures")
			l.waitRequests(t, 100)
			l.stopLoad(t)
			s.stop()
		})
	}
}
