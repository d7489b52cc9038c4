//go:build unix

package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Barrier waits until the manager has processed every message sent
// before it (sd_notify_barrier(3)): it sends BARRIER=1 with the write end
// of a pipe, which the manager closes once it got that far, and waits for
// the read end to see it closed, up to timeout. A process that exits
// right after a message (a generation after MAINPID=) calls it, or the
// manager may read the message only once the sender is gone, fail to
// find its unit and drop it. A manager older than the barrier closes the
// fd at once. A nil Sender returns nil.
func (s *Sender) Barrier(timeout time.Duration) error {
	if s == nil {
		return nil
	}
	r, w, err := os.Pipe() // close-on-exec
	if err != nil {
		return fmt.Errorf("sd_notify barrier: pipe: %w", err)
	}
	defer r.Close()
	err = s.sendFDs([]byte("BARRIER=1\n"), []int{int(w.Fd())}, "barrier")
	w.Close()
	if err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(r.Fd()), Events: unix.POLLIN}}
	for deadline := time.Now().Add(timeout); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("sd_notify barrier: the manager did not get to it within %v", timeout)
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sd_notify barrier: poll: %w", err)
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return nil
		}
	}
}
