//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The runtime directory: os.TempDir()/tcpgrace-run-*, mode 0700, holding
// the notify socket and lockName. The supervisor holds an exclusive
// flock(2) on lockName for its whole life, self-upgrades included (the
// fd crosses the exec), so that the lock, not a pid, tells a live
// supervisor's directory from the one a killed supervisor left: a lock
// is released by the kernel when its holder dies, and it means the same
// in every PID namespace that shares the directory.
const (
	runDirPattern = "tcpgrace-run-*"
	lockName      = "lock"
)

// makeRunDir removes the runtime directories that supervisors of this
// user left when they were killed, then makes this supervisor's and locks
// it. It returns the directory and the lock, which the caller keeps open
// until it removes the directory.
func makeRunDir(log *slog.Logger) (string, *os.File, error) {
	removeStaleRunDirs(os.TempDir(), log)
	dir, err := os.MkdirTemp("", runDirPattern)
	if err != nil {
		return "", nil, err
	}
	lock, err := lockRunDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, lock, nil
}

// lockRunDir creates dir's lock file already locked: it is made and
// locked under another name and then renamed, so that whoever finds
// lockName finds it locked as long as its holder lives.
func lockRunDir(dir string) (*os.File, error) {
	tmp := filepath.Join(dir, lockName+".new")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime directory lock: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, lockName))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("runtime directory lock %s: %w", tmp, err)
	}
	return f, nil
}

// removeStaleRunDirs removes every runtime directory in tmp that belongs
// to this user and whose lock nobody holds: its supervisor is gone. A
// directory without a lock file (being made right now, or made by a build
// that did not lock it) is left alone.
func removeStaleRunDirs(tmp string, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, runDirPattern))
	for _, dir := range dirs {
		if !ownDir(dir) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			err = os.RemoveAll(dir)
			log.Info("removed the runtime directory of a supervisor that is gone", "dir", dir, "err", err)
		} else if !errors.Is(err, unix.EWOULDBLOCK) {
			log.Warn("runtime directory: cannot tell whether its supervisor lives", "dir", dir, "err", err)
		}
		f.Close()
	}
}

// ownDir reports whether path is a directory (not a link to one) of this
// process's effective user.
func ownDir(path string) bool {
	info, err := os.Lstat(path)
	if err != nil || !info.IsDir() {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// adoptRunDirLock takes the lock the previous image of this supervisor
// held, as fd; if it passed none (a build before the lock) or fd is not
// open, dir is locked anew.
func adoptRunDirLock(dir string, fd int) (*os.File, error) {
	var st unix.Stat_t
	if fd <= 0 || unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return lockRunDir(dir)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), filepath.Join(dir, lockName)), nil
}
