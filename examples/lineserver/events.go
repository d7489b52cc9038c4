package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// eventLog appends every lifecycle event the Upgrader reports
// (Options.OnEvent) to a file as one JSON line (-events). The file is
// opened for appending, so every generation of the service appends to
// the same file, and each line goes out in one write, so that lines of
// generations that write at once never interleave. Reopen reopens it at
// its path, for log rotation.
type eventLog struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex // guards f: record and reopen run on different goroutines
	f    *os.File
}

// eventLine is one line of the -events file. Fields that are zero or
// empty are left out.
type eventLine struct {
	Kind        string  `json:"kind"`                  // EventKind.String(): "upgrade started"
	Time        string  `json:"time"`                  // RFC 3339, nanoseconds
	PID         int     `json:"pid"`                   // the process that writes the line
	Generation  int     `json:"generation,omitempty"`  // the older one's for "older drained"
	OtherPID    int     `json:"other_pid,omitempty"`   // Event.PID: the next or older generation
	Reason      string  `json:"reason,omitempty"`      // who asked for an upgrade, why it stops
	Err         string  `json:"err,omitempty"`         // why refused or failed; a reload's or drain's error
	TookMS      float64 `json:"took_ms,omitempty"`     // milliseconds, to the microsecond
	Connections int     `json:"connections,omitempty"` // open when the drain began
	Finished    int     `json:"finished,omitempty"`
	ForceClosed int     `json:"force_closed,omitempty"`
}

// open opens the file for appending, creating it if need be; it does
// nothing without -events (l is nil).
func (l *eventLog) open() error {
	if l == nil {
		return nil
	}
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.f = f
	l.mu.Unlock()
	return nil
}

// openAppend opens path for appending, creating it if need be.
func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("-events file: %w", err)
	}
	return f, nil
}

// record writes e as one line; it is the Upgrader's Options.OnEvent. A
// failed write is logged, and the events after it are still tried. The
// Upgrader emits nothing before Ready, which comes after open.
func (l *eventLog) record(e tcpgrace.Event) {
	line, err := json.Marshal(lineOf(e))
	if err != nil {
		l.log.Error("events: encoding", "kind", e.Kind.String(), "err", err)
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(line); err != nil { // one write: one line, whole
		l.log.Error("events: writing", "path", l.path, "kind", e.Kind.String(), "err", err)
	}
}

// lineOf is e as a line of the file.
func lineOf(e tcpgrace.Event) eventLine {
	line := eventLine{Kind: e.Kind.String(), Time: e.Time.Format(time.RFC3339Nano), PID: os.Getpid(),
		Generation: e.Generation, OtherPID: e.PID, Reason: e.Reason,
		TookMS:      float64(e.Took.Microseconds()) / 1000,
		Connections: e.Connections, Finished: e.Finished, ForceClosed: e.ForceClosed}
	if e.Err != nil {
		line.Err = e.Err.Error()
	}
	return line
}

// reopen opens the file at its path again and writes the next events
// there: the Server's Reload hook, so that SIGHUP or tcpgrace reload after
// a rename (logrotate) starts a new file. If the path cannot be opened
// it keeps the file it has and returns why.
func (l *eventLog) reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return fmt.Errorf("reopening the %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing the -events file it replaced (%s): %w", l.path, err)
	}
	return nil
}
