package tcpgrace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// writePIDFile replaces path atomically with pid: a reader sees the old
// pid or the new one, never a partial file. Where the directory does not
// let this process create files (a pid file made for the service's user
// in a root-owned /run), it writes the existing file in place instead:
// truncate, then write, which a reader may catch empty.
func writePIDFile(path string, pid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		if werr := writeInPlace(path, pid); werr != nil {
			return fmt.Errorf("tcpgrace: writing pid file %s: %w (and in place: %w)", path, err, werr)
		}
		return nil
	}
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

// writeInPlace overwrites the existing file at path with pid.
func writeInPlace(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
// another process (the next generation) is never touched. Where the
// directory forbids removing it, the file is emptied instead, so that it
// names no process.
func removePIDFile(path string, pid int) error {
	if readPIDFile(path) != pid {
		return nil // gone, unreadable, or another process's
	}
	err := os.Remove(path)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		err = os.Truncate(path, 0)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tcpgrace: removing pid file %s: %w", path, err)
	}
	return nil
}
