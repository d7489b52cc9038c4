// Package proc holds the process helpers that the library and the
// supervisor of `tcpgrace run` share: the path a process was started
// from, which an upgrade runs again, and what the kernel says of a
// process (/proc/PID/stat on Linux).
package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Executable is the path this process was started from, as nginx re-execs
// its own argv[0]: args[0] made absolute against the working directory
// now (call it at start), or looked up in PATH when it has no slash. It
// is kept unresolved, so that a symlink ("current -> releases/v2") is
// followed anew at every upgrade. When args[0] does not name the running
// program (a launcher that set it to something else), it is
// os.Executable(), which has symlinks resolved; the error is
// os.Executable's.
func Executable(args []string) (string, error) {
	var p string
	switch {
	case len(args) == 0 || args[0] == "":
	case strings.Contains(args[0], "/"):
		p, _ = filepath.Abs(args[0])
	default:
		if found, err := exec.LookPath(args[0]); err == nil {
			p, _ = filepath.Abs(found)
		}
	}
	self, err := os.Executable()
	if p != "" && sameFile(p, self) {
		return p, nil
	}
	return self, err
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
