// Package pidfile writes, reads and removes the PID file that names a
// serving process: the library's generations and the supervisor of
// `tcpgrace run` keep theirs the same way.
//
// A writer replaces the file atomically (a temp file renamed over it), so
// that a reader sees the old pid or the new one, never a partial file.
// Where the directory does not let the process create files (a pid file
// made for the service's user in a root-owned /run), it writes the
// existing file in place instead. Removing leaves a file that names
// another process alone, and empties a file it may not remove.
package pidfile

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

// Write replaces path atomically with pid: a reader sees the old pid or
// the new one, never a partial file. Where the directory does not let
// this process create files (a pid file made for the service's user in a
// root-owned /run), it writes the existing file in place instead:
// truncate, then write, which a reader may catch empty. The error names
// path.
func Write(path string, pid int) error {
	h, err := WriteHeld(path, pid)
	h.Close()
	return err
}

// Held is a pid file its writer keeps open. The next writer renames its
// own file over it; while this one is open, that rename only unlinks it,
// and the file is freed at this Close (or this process's exit), not in
// the next writer's rename: on ext4 that freeing costs about 0.3 ms,
// which a hand-off would wait for (bench/RESULTS.md). A nil *Held, as
// WriteHeld returns when it wrote the file another way, holds nothing.
type Held struct{ fd int }

// Close lets the file go.
func (h *Held) Close() error {
	if h == nil || h.fd < 0 {
		return nil
	}
	err := closeFD(h.fd)
	h.fd = -1
	return err
}

// WriteHeld is Write, keeping the new file open (see Held) when it wrote
// a temp file named for pid and renamed it over path, as it does unless
// that name is taken (a crashed process's with this pid) or the
// directory lets no file be created.
func WriteHeld(path string, pid int) (*Held, error) {
	if h, done, err := writeQuick(path, pid); done {
		return h, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if denied(err) {
		if werr := writeInPlace(path, pid); werr != nil {
			return nil, fmt.Errorf("writing pid file %s: %w (and in place: %w)", path, err, werr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("writing pid file %s: %w", path, err)
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
		return nil, fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return nil, nil
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

// Read returns the pid in path, or 0 if there is none (no file, an empty
// or unreadable one).
func Read(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Remove removes path only if it holds pid: a file that names another
// process (the next generation) is never touched. Where the directory
// forbids removing it, the file is emptied instead, so that it names no
// process. A file that is gone already is no error.
func Remove(path string, pid int) error {
	if Read(path) != pid {
		return nil // gone, unreadable, or another process's
	}
	err := os.Remove(path)
	if denied(err) {
		err = os.Truncate(path, 0)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing pid file %s: %w", path, err)
	}
	return nil
}

// denied reports whether err says the directory may not be written: no
// permission, or a read-only file system.
func denied(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}
