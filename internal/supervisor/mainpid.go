//go:build linux

package supervisor

import (
	"context"
	"os"

	"golang.org/x/sys/unix"
)

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
	in := s.find(pid)
	if in == nil || in.main != pid || in.main == in.pid {
		return
	}
	if p, ok := readProc(pid); ok && p.ppid == os.Getpid() {
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
		if pidfd, err := unix.PidfdOpen(in.main, 0); err == nil {
			go s.watchMain(pidfd, in.main)
		} else {
			gone = append(gone, in.main)
		}
	}
	for _, pid := range gone {
		s.mainGone(pid)
	}
}
