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

	"github.com/tcpgrace/tcpgrace/internal/proc"
)

// Write replaces path atomically with pid: a reader sees the old pid or
// the new one, never a partial file. Where the directory does not let
// this process create files (a pid file made for the service's user in a
// root-owned /run), it writes the existing file in place instead:
// truncate, then write, which a reader may catch empty. The error names
// path.
func Write(path string, pid int) error {
	tmp, err := writeTemp(path, pid)
	if denied(err) {
		if werr := writeInPlace(path, pid); werr != nil {
			return fmt.Errorf("writing pid file %s: %w (and in place: %w)", path, err, werr)
		}
		return nil
	}
	if err == nil {
		err = os.Rename(tmp, path)
		if err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return nil
}

// writeTemp writes pid to a new file beside path and returns its name:
// Write's first half.
func writeTemp(path string, pid int) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(tmp, "%d\n", pid)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// Prepared is a pid file written beside its path ahead of time, to be
// renamed into place by Commit: a process that must write its pid file
// the moment it is ready does the slow half (creating and writing the
// file, about 0.2 ms here) while it starts.
type Prepared struct {
	path string // absolute
	pid  int
	done chan struct{}
	tmp  string // "" if preparing failed, or once committed or discarded
}

// Prepare starts writing pid to a temporary file beside path, in the
// background. The caller must Commit or Discard the result.
func Prepare(path string, pid int) *Prepared {
	p := &Prepared{pid: pid, done: make(chan struct{})}
	abs, err := filepath.Abs(path)
	if err != nil {
		close(p.done)
		return p
	}
	p.path = abs
	go func() {
		defer close(p.done)
		sweep(abs)
		p.tmp, _ = writeOwnTemp(abs, pid) // on error Commit writes the file as Write does, and reports that
	}()
	return p
}

// ownTemp is the name of the file pid prepares for path: named after the
// process, so that one left by a process that exited before it was
// ready (without Discard) can be told and removed (see sweep).
func ownTemp(path string, pid int) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".ready."+strconv.Itoa(pid))
}

// writeOwnTemp is writeTemp under the name ownTemp gives.
func writeOwnTemp(path string, pid int) (string, error) {
	name := ownTemp(path, pid)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if err == nil {
		err = f.Chmod(0o644) // whatever the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// sweep removes the files prepared for path by processes that are gone.
func sweep(path string) {
	prefix := "." + filepath.Base(path) + ".ready."
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(rest); err == nil && pid > 0 && !proc.Alive(pid) {
			os.Remove(filepath.Join(filepath.Dir(path), e.Name()))
		}
	}
}

// Commit puts the prepared file in place at path: a rename, if path is
// still the file Prepare was given (relative paths are taken from the
// working directory at each call) and the preparation succeeded;
// otherwise, or if the rename fails, it removes what was prepared and
// writes path as Write does. The error names path.
func (p *Prepared) Commit(path string, pid int) error {
	<-p.done
	if abs, err := filepath.Abs(path); err == nil && abs == p.path && pid == p.pid && p.tmp != "" {
		tmp := p.tmp
		p.tmp = ""
		if os.Rename(tmp, abs) == nil {
			return nil
		}
		os.Remove(tmp)
	}
	p.Discard()
	return Write(path, pid)
}

// Discard removes the prepared file, if it is still there.
func (p *Prepared) Discard() {
	<-p.done
	if p.tmp != "" {
		os.Remove(p.tmp)
		p.tmp = ""
	}
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
