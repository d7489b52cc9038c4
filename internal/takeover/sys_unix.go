//go:build unix

package takeover

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// oobSize is the control buffer of the first reply: room for a few fds,
// so that more than the one expected is seen, and closed.
var oobSize = unix.CmsgSpace(4 * 4)

// sendWithFile writes msg on c with f's fd attached (SCM_RIGHTS), whole,
// within ctx.
func sendWithFile(ctx context.Context, c *net.UnixConn, msg []byte, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(deadline)
		defer c.SetWriteDeadline(time.Time{})
	}
	n, _, err := c.WriteMsgUnix(msg, unix.UnixRights(fd), nil)
	if err == nil && n < len(msg) {
		_, err = c.Write(msg[n:])
	}
	return err
}

// filesOf takes the fds of one control message: at most one, the
// channel, and only once (had is the one taken before). Any other fd is
// closed and makes it an error.
func filesOf(oob []byte, had *os.File) (*os.File, error) {
	if len(oob) == 0 {
		return had, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return had, fmt.Errorf("the reply's control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) != 1 || had != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return had, fmt.Errorf("the reply came with %d more fds, want one in all", len(fds))
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), "tcpgrace-takeover"), nil
}

// own turns files into raw fds of this process (close-on-exec) and
// closes the files: wire.Open takes raw fds.
func own(files []*os.File) ([]int, error) {
	fds := make([]int, 0, len(files))
	var err error
	for i, f := range files {
		var rc syscall.RawConn
		if rc, err = f.SyscallConn(); err == nil {
			var derr error
			err = rc.Control(func(s uintptr) {
				var fd int
				if fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
					fds = append(fds, fd)
				}
			})
			err = errOr(err, derr)
		}
		if err != nil {
			err = fmt.Errorf("file %d: dup: %w", i, err)
			break
		}
	}
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
