package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// pollEvery is how often stop -wait looks again: at the control socket,
// or at processes it cannot be told about.
const pollEvery = 100 * time.Millisecond

// exitWaiter waits for the exit of a service's generations (stop -wait).
// It watches their pids where it can: in our pid namespace, on Linux
// (pidfds, opened as soon as the pids are known, so that a pid reused
// later is not mistaken for them). Otherwise (a server in a container,
// whose pids mean nothing here) it waits until nothing listens on the
// control socket any more, which proves only that the process that held
// it has exited.
type exitWaiter struct {
	path     string      // the control socket
	ours     string      // our pid namespace, "" if unknown
	bySocket bool        // a pid was in another namespace: watch the socket instead
	procs    map[int]int // the pids watched, each with its pidfd (-1: none, polled)
}

func newExitWaiter(path string) *exitWaiter {
	return &exitWaiter{path: path, ours: control.PIDNamespace(), procs: map[int]int{}}
}

// add watches pid, a pid in namespace ns as a reply names it ("" if the
// server did not say, as before pid_ns: taken as ours).
func (w *exitWaiter) add(pid int, ns string) {
	if pid <= 0 || w.bySocket {
		return
	}
	if !canWatchPIDs || (ns != "" && ns != w.ours) {
		w.bySocket = true
		w.close()
		return
	}
	if _, ok := w.procs[pid]; !ok {
		if fd, alive := openProcess(pid); alive {
			w.procs[pid] = fd
		}
	}
}

// wait blocks until every generation watched has exited, or ctx ends;
// it returns "" then, or what is left.
func (w *exitWaiter) wait(ctx context.Context) string {
	if w.bySocket {
		return w.waitSocket(ctx)
	}
	for len(w.procs) > 0 {
		w.poll(min(pollEvery, max(time.Until(deadlineOf(ctx)), 0)))
		if len(w.procs) > 0 && ctx.Err() != nil {
			return fmt.Sprintf("%s still running", pidList(w.procs))
		}
	}
	return ""
}

// waitSocket asks the control socket for a status every pollEvery until
// nothing listens on it (no file, or connection refused); a server that
// still holds the socket without answering (it stopped accepting) counts
// as running.
func (w *exitWaiter) waitSocket(ctx context.Context) string {
	for {
		ask, cancel := context.WithTimeout(ctx, time.Second)
		_, err := control.Do(ask, w.path, control.Request{Cmd: control.CmdStatus})
		cancel()
		if errors.Is(err, control.ErrNotSent) {
			return ""
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("the control socket %s is still held (the pids are in another pid namespace)", w.path)
		case <-time.After(pollEvery):
		}
	}
}

// deadlineOf is ctx's deadline, or an hour from now.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

// pidList names the pids of procs, in order.
func pidList(procs map[int]int) string {
	pids := make([]int, 0, len(procs))
	for pid := range procs {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	s := "pid"
	if len(pids) > 1 {
		s = "pids"
	}
	for i, pid := range pids {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf(" %d", pid)
	}
	return s
}
