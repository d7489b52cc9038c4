//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
)

// eventLine is one line of Config.Events: a supervisor's event as JSON.
// Zero fields are left out.
type eventLine struct {
	Kind       string  `json:"kind"`
	Time       string  `json:"time"`
	PID        int     `json:"pid"`                // the supervisor
	Instance   int     `json:"instance,omitempty"` // the instance's pid
	Generation int     `json:"generation,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Err        string  `json:"err,omitempty"`
	TookMS     float64 `json:"took_ms,omitempty"`
	Serving    bool    `json:"serving,omitempty"`
}

// openEventLog opens path for appending (os.OpenFile makes it
// close-on-exec: instances do not get it): each generation of the
// supervisor (a self-upgrade reopens it) adds to what is there.
func openEventLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("-events %s: %w", path, err)
	}
	return f, nil
}

// openEvents opens Config.Events, if set, before anything is bound: on a
// cold start a file that cannot be opened is an error; in an image that
// adopts a running supervisor's state (its self-upgrade), it is only
// logged, as no log file is worth the service.
func (s *Supervisor) openEvents(adopting bool) (*os.File, error) {
	if s.cfg.Events == "" {
		return nil, nil
	}
	f, err := openEventLog(s.cfg.Events)
	if err != nil && adopting {
		s.log.Warn("events: not written", "err", err)
		return nil, nil
	}
	return f, err
}

// writeEvents subscribes f to the events: one line each, written with one
// write (O_APPEND), so that lines never interleave. A write that fails is
// logged once.
func (s *Supervisor) writeEvents(f *os.File) {
	failed := false
	s.events.Subscribe(func(e event.Event) {
		l := eventLine{Kind: e.Kind.String(), Time: e.Time.Format(time.RFC3339Nano), PID: os.Getpid(),
			Instance: e.Child, Generation: e.Generation, Reason: e.Reason, Serving: e.Serving,
			TookMS: float64(e.Took.Microseconds()) / 1000}
		if e.Err != nil {
			l.Err = e.Err.Error()
		}
		b, _ := json.Marshal(l) // plain fields: cannot fail
		if _, err := f.Write(append(b, '\n')); err != nil && !failed {
			failed = true
			s.log.Warn("events: cannot write", "path", f.Name(), "err", err)
		}
	})
}
