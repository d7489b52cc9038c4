//go:build unix

package pidfile

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// writeQuick writes pid to a temp file next to path, named for pid, mode
// 0644 whatever the umask, renames it over path and keeps it open: in a
// handful of system calls and no *os.File, as the pid file is on the
// hand-off's critical path. done is false when it did nothing: the temp
// name is taken, or the file cannot be created (WriteHeld's other paths
// then decide).
func writeQuick(path string, pid int) (h *Held, done bool, err error) {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+strconv.Itoa(pid)+".tmp")
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, nil
	}
	line := strconv.AppendInt(nil, int64(pid), 10)
	line = append(line, '\n')
	n, err := unix.Write(fd, line)
	if err == nil && n != len(line) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(line))
	}
	if err == nil {
		err = unix.Fchmod(fd, 0o644)
	}
	if err == nil {
		err = unix.Rename(tmp, path)
	}
	if err != nil {
		unix.Close(fd)
		unix.Unlink(tmp)
		return nil, true, fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return &Held{fd: fd}, true, nil
}

func closeFD(fd int) error { return unix.Close(fd) }
