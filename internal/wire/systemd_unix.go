//go:build unix

package wire

import "golang.org/x/sys/unix"

// isStateFile reports whether fd is a regular file (a memfd), and makes
// it close-on-exec if so: the fd store's state blob.
func isStateFile(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	unix.CloseOnExec(fd)
	return true
}
