//go:build linux

package supervisor

import (
	"context"
	"os"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/proc"
)

// openPidfd opens a pidfd for pid; -1 and no error where the kernel has
// none (before Linux 5.3): the death of a MAINPID= process that is not
// the supervisor's child then goes unseen.
func openPidfd(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ENOSYS {
		return -1, nil
	}
	return fd, err
}

func closePidfd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// runs reports whether the process pidfd refers to (pid, where there is
// no pidfd) still runs: then pid is still its number.
func runs(pidfd, pid int) bool {
	if pidfd < 0 {
		return unix.Kill(pid, 0) == nil
	}
	return unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil
}

// watchMain waits until the process pidfd refers to, pid, the main
// process an instance named with MAINPID=, has exited, and tells the
// loop (mainGone). It owns pidfd. The supervisor learns of the death of
// its own children by wait4; a MAINPID= process may be another's child,
// which its own parent reaps.
func (s *Supervisor) watchMain(pidfd, pid int) {
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			break
		}
	}
	s.do(context.Background(), func() { s.mainGone(pid) })
}

// mainGone handles the death of pid, an instance's main process named
// with MAINPID=. A child of the supervisor is left to reap, which learns
// its exit status; another process's child is gone for good once its
// parent reaps it, with a status nobody tells: the instance has ended,
// and whatever is left of it (its first process too) is stopped.
func (s *Supervisor) mainGone(pid int) {
	s.notify.drain(s.notes, s.onNote) // what it said before it exited counts first
	in := s.find(pid)
	if in == nil || in.main != pid || in.main == in.pid {
		return
	}
	if p, ok := proc.ReadStat(pid); ok && p.PPID == os.Getpid() {
		return // a zombie of ours: reap has it, with its status
	}
	s.gone(in, pid, "exited, reaped by its own parent: status unknown", -1)
}

// watchMains watches the main processes of the instances a previous
// image of the supervisor handed over.
func (s *Supervisor) watchMains() {
	var gone []int
	for _, in := range s.instances {
		if in.main == in.pid {
			continue
		}
		switch pidfd, err := openPidfd(in.main); {
		case err != nil:
			gone = append(gone, in.main)
		case pidfd >= 0:
			go s.watchMain(pidfd, in.main)
		}
	}
	for _, pid := range gone {
		s.mainGone(pid)
	}
}
