package tcpgrace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// writePIDFile replaces path atomically with pid: a reader sees the old
// pid or the new one, never a partial file.
func writePIDFile(path string, pid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("tcpgrace: writing pid file %s: %w", path, err)
	}
	_, err = fmt.Fprintf(tmp, "%d\n", pid)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("tcpgrace: writing pid file %s: %w", path, err)
	}
	return nil
}

// readPIDFile returns the pid in path, or 0 if there is none.
func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// removePIDFile removes path only if it holds pid: a file that names
// another process (the next generation) is never touched.
func removePIDFile(path string, pid int) error {
	if readPIDFile(path) != pid {
		return nil // gone, unreadable, or another process's
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tcpgrace: removing pid file %s: %w", path, err)
	}
	return nil
}
