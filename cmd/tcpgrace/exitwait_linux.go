package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// canWatchPIDs: Linux has pidfds (and kill(2) where they are missing).
const canWatchPIDs = true

// openProcess opens a pidfd of pid; alive is false if it has exited
// already. Without pidfds (Linux before 5.3) fd is -1 and the pid is
// polled with kill(pid, 0).
func openProcess(pid int) (fd int, alive bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		return fd, true
	case err == unix.ESRCH:
		return -1, false
	}
	return -1, unix.Kill(pid, 0) != unix.ESRCH
}

// poll waits up to d for a watched process to exit, and forgets those
// that have.
func (w *exitWaiter) poll(d time.Duration) {
	var fds []unix.PollFd
	for pid, fd := range w.procs {
		if fd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		} else if unix.Kill(pid, 0) == unix.ESRCH {
			delete(w.procs, pid)
		}
	}
	if len(fds) < len(w.procs) {
		d = min(d, pollEvery) // some are polled by kill
	}
	if _, err := unix.Poll(fds, int(d.Milliseconds())); err != nil && err != unix.EINTR {
		time.Sleep(d)
	}
	for _, p := range fds {
		if p.Revents == 0 {
			continue
		}
		for pid, fd := range w.procs {
			if fd == int(p.Fd) {
				unix.Close(fd)
				delete(w.procs, pid)
			}
		}
	}
}

// close releases the pidfds and forgets the pids.
func (w *exitWaiter) close() {
	for pid, fd := range w.procs {
		if fd >= 0 {
			unix.Close(fd)
		}
		delete(w.procs, pid)
	}
}
