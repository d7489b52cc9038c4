package sockfd

import (
	"errors"
	"syscall"
)

// TemporaryAccept reports whether an accept error passes with time: no fd
// or memory to spare, an aborted connection, a signal. An accept loop
// backs off and goes on; any other error ends it.
func TemporaryAccept(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED,
		syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM:
		return true
	}
	return false
}
