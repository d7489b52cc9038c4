//go:build unix

package sockfd

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Dup duplicates the socket behind c as a close-on-exec fd numbered lowest
// or above (fcntl F_DUPFD_CLOEXEC, through SyscallConn().Control), and
// leaves the socket as it was: never (*net.TCPListener).File, which
// would switch the shared socket to blocking mode. The caller owns the
// returned fd. Errors are the system's, for the caller to say what was
// being duplicated.
func Dup(c syscall.Conn, lowest int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, lowest) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	return fd, nil
}

// Stat is the FileID of the file at path, symlinks followed.
func Stat(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, err
	}
	return idOf(&st), nil
}

// SocketFile is the FileID of the Unix socket file at path itself (a
// symlink is not followed); false if there is none: no file, or a file of
// another type.
func SocketFile(path string) (FileID, bool) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return FileID{}, false
	}
	return idOf(&st), true
}

// idOf is the FileID a stat(2) result names; the widths of st_dev and
// st_ino differ between platforms.
func idOf(st *unix.Stat_t) FileID {
	return FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}
}

// Socketpair makes a connected pair of Unix sockets of type typ
// (unix.SOCK_DGRAM, unix.SOCK_SEQPACKET, ...), both close-on-exec.
// SOCK_CLOEXEC is not everywhere (macOS): close-on-exec is set under
// syscall.ForkLock, so that no fork sees the fds without it.
func Socketpair(typ int) ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	return fds, err
}
