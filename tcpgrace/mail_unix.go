//go:build unix

package tcpgrace

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// errMailFull is a report that found no room in the mailbox.
var errMailFull = errors.New("tcpgrace: mailbox full")

// newMailPair makes a mailbox's two ends.
func newMailPair() (in, out *os.File, err error) {
	fds, err := sockfd.Socketpair(unix.SOCK_DGRAM)
	if err != nil {
		return nil, nil, fmt.Errorf("tcpgrace: mailbox: socketpair: %w", err)
	}
	for _, fd := range fds {
		// Non-blocking before os.NewFile: the runtime's poller then
		// serves reads with deadlines. Every generation shares the mode.
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, nil, fmt.Errorf("tcpgrace: mailbox: O_NONBLOCK: %w", err)
		}
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
