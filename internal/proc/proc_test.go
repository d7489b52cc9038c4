package proc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExecutable: argv[0] is kept as given (made absolute, found in PATH)
// when it names the running program, symlinks unresolved, so that an
// upgrade follows "current -> releases/v2" anew; anything else falls
// back to os.Executable().
func TestExecutable(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err, "os.Executable works here")
	dir := t.TempDir()
	link := filepath.Join(dir, "current")
	require.NoError(t, os.Symlink(self, link), "a symlink to the test binary")
	other := filepath.Join(dir, "other")
	require.NoError(t, os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755), "another program")
	t.Setenv("PATH", dir)
	t.Chdir(dir)

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"absolute symlink kept", []string{link}, link},
		{"relative path made absolute", []string{"./current"}, link},
		{"relative path with a dot dot", []string{"../" + filepath.Base(dir) + "/current"}, link},
		{"found in PATH", []string{"current"}, link},
		{"the file itself", []string{self}, self},
		{"another program", []string{other}, self},
		{"another program in PATH", []string{"other"}, self},
		{"not found", []string{"no-such-program"}, self},
		{"missing file", []string{filepath.Join(dir, "gone")}, self},
		{"empty argv[0]", []string{""}, self},
		{"no args", nil, self},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Executable(c.args)
			require.NoError(t, err)
			assert.Equal(t, c.want, got, "args %q", c.args)
		})
	}
}
