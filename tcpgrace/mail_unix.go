//go:build unix

package tcpgrace

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// errMailFull is a report that found no room in the mailbox.
var errMailFull = errors.New("tcpgrace: mailbox full")

// newMailPair makes a mailbox's two ends.
func newMailPair() (in, out *os.File, err error) {
	// SOCK_CLOEXEC is not everywhere (macOS): close-on-exec is set under
	// ForkLock, so that no fork sees the fds without it.
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("tcpgrace: mailbox: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "tcpgrace-mail-in"), os.NewFile(uintptr(fds[1]), "tcpgrace-mail-out"), nil
}

// dupFile duplicates f (close-on-exec, through SyscallConn, which leaves
// its blocking mode alone).
func dupFile(f *os.File, name string) (*os.File, error) {
	fd, err := sockfd.Dup(f, wire.ListenFDsStart)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// sendDatagram writes b to out without waiting: errMailFull if the
// mailbox has no room.
func sendDatagram(out *os.File, b []byte) error {
	rc, err := out.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Sendto(int(fd), b, unix.MSG_DONTWAIT, nil) }); err != nil {
		return err
	}
	if errors.Is(serr, unix.EAGAIN) {
		return errMailFull
	}
	if serr != nil {
		return fmt.Errorf("tcpgrace: mailbox: send: %w", serr)
	}
	return nil
}
