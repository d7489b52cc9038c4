package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// TestEventLine: a line carries the event's fields under their names and
// leaves out the zero ones.
func TestEventLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l := &eventLog{path: path, log: slog.New(slog.DiscardHandler)}
	require.NoError(t, l.open())
	l.record(tcpgrace.Event{Kind: tcpgrace.EventUpgradeFailed, Time: at, Generation: 2, PID: 42,
		Err: errors.New("exit status 3"), Took: 1500 * time.Microsecond})
	l.record(tcpgrace.Event{Kind: tcpgrace.EventReady, Time: at, Generation: 1})
	pid := strconv.Itoa(os.Getpid())
	assert.Equal(t, `{"kind":"upgrade failed","time":"2026-01-02T03:04:05.6Z","pid":`+pid+
		`,"generation":2,"other_pid":42,"err":"exit status 3","took_ms":1.5}`+"\n"+
		`{"kind":"ready","time":"2026-01-02T03:04:05.6Z","pid":`+pid+`,"generation":1}`+"\n",
		readAll(t, path))
}

// TestEventLogReopen: after the file is renamed, reopen makes the next
// lines go to a new file at the path; a path that cannot be opened keeps
// the file it has and says which.
func TestEventLogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	l := &eventLog{path: path, log: slog.New(slog.DiscardHandler)}
	require.NoError(t, l.open())
	l.record(tcpgrace.Event{Kind: tcpgrace.EventReady, Time: time.Now(), Generation: 1})
	require.NoError(t, os.Rename(path, path+".1"))
	require.NoError(t, l.reopen())
	l.record(tcpgrace.Event{Kind: tcpgrace.EventReloaded, Time: time.Now(), Generation: 1})
	assert.Contains(t, readAll(t, path+".1"), `"kind":"ready"`, "the first line stays in the rotated file")
	assert.NotContains(t, readAll(t, path+".1"), `"kind":"reloaded"`)
	assert.Contains(t, readAll(t, path), `"kind":"reloaded"`, "the next one goes to the new file")

	l.path = filepath.Join(dir, "missing", "events.jsonl")
	err := l.reopen()
	require.Error(t, err)
	assert.Contains(t, err.Error(), l.path, "the error names the path")
	l.record(tcpgrace.Event{Kind: tcpgrace.EventStopping, Time: time.Now(), Generation: 1})
	assert.Contains(t, readAll(t, path), `"kind":"stopping"`, "the file it had still takes lines")
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
