//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/text"
)

// Status is a snapshot of the supervisor, for a status command.
type Status struct {
	PID         int              // the supervisor's own, stable pid
	Version     string           // the supervisor's build
	Instances   []InstanceStatus // oldest first
	Restarts    int              // instances started because the serving one had died
	Crashes     int              // deaths of the serving instance in a row (the backoff's count)
	RestartIn   time.Duration    // a restart waits for its backoff this long; 0 if none waits
	LastFailure string           // the last failed start or crash, "" if none
	Stopping    bool
}

// InstanceStatus is one instance in a [Status]. Connections are not
// counted: the supervisor never sees them, the program does.
type InstanceStatus struct {
	PID        int       // the process the supervisor started
	MainPID    int       // the process that counts (MAINPID=), usually PID
	Generation int       // 1 for the first instance, one more for each next one
	State      string    // starting, serving or draining
	Since      time.Time // when it entered State
	Status     string    // its last STATUS=
}

// Status returns a snapshot, taken by the loop of Run: it waits until
// the loop is free (ctx bounds the wait), and after Run has returned it
// fails with an error wrapping [ErrStopping].
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	var st Status
	if err := s.do(ctx, func() { st = s.snapshot() }); err != nil {
		return Status{}, err
	}
	return st, nil
}

func (s *Supervisor) snapshot() Status {
	st := Status{PID: os.Getpid(), Version: s.cfg.Version, Restarts: s.restarts, Crashes: s.crashes,
		LastFailure: s.lastFailure, Stopping: s.stopping}
	if !s.restartAt.IsZero() {
		st.RestartIn = max(time.Until(s.restartAt), 0)
	}
	for _, in := range s.instances {
		st.Instances = append(st.Instances, InstanceStatus{PID: in.pid, MainPID: in.main, Generation: in.gen,
			State: in.phase.String(), Since: in.since, Status: in.status})
	}
	return st
}

// statusLine is the STATUS= the service manager above sees.
func (s *Supervisor) statusLine() string {
	var line string
	switch {
	case s.stopping:
		return "stopping"
	case s.serving != nil:
		line = fmt.Sprintf("serving: generation %d, pid %d", s.serving.gen, s.serving.main)
		if s.serving.status != "" {
			line += ": " + s.serving.status
		}
	case !s.restartAt.IsZero():
		line = fmt.Sprintf("nothing serves: restarting in %v after %s in a row",
			time.Until(s.restartAt).Round(time.Millisecond), text.Count(s.crashes, "crash", "crashes"))
	default:
		line = "nothing serves yet"
	}
	if s.starting != nil {
		line += fmt.Sprintf("; starting generation %d", s.starting.gen)
	}
	if s.lastFailure != "" {
		line += "; last failure: " + s.lastFailure
	}
	return line
}

// sdStatus sends the status line to the service manager above, if any.
func (s *Supervisor) sdStatus() {
	if s.mgr.Enabled() {
		s.sd("STATUS=" + s.statusLine())
	}
}
