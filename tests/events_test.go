package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eventRecord is one line of lineserver's -events file.
type eventRecord struct {
	Kind        string  `json:"kind"`
	Time        string  `json:"time"`
	PID         int     `json:"pid"`
	Generation  int     `json:"generation"`
	OtherPID    int     `json:"other_pid"`
	Reason      string  `json:"reason"`
	Err         string  `json:"err"`
	TookMS      float64 `json:"took_ms"`
	Connections int     `json:"connections"`
	Finished    int     `json:"finished"`
	ForceClosed int     `json:"force_closed"`
}

// eventFiles are the -events files of one service, oldest first (a
// rotated one, then the one at the path).
type eventFiles struct {
	t     *testing.T
	paths []string
}

// read decodes every whole line of the files; a last line still without
// its newline (a write under way) is left for the next read.
func (f *eventFiles) read() []eventRecord {
	f.t.Helper()
	var recs []eventRecord
	for _, path := range f.paths {
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(f.t, err)
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i+1]
		} else {
			data = nil
		}
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if line == "" {
				continue
			}
			var r eventRecord
			require.NoError(f.t, json.Unmarshal([]byte(line), &r), "each line of %s is one JSON object: %q", path, line)
			recs = append(recs, r)
		}
	}
	return recs
}

// String is the files' contents, for failure messages.
func (f *eventFiles) String() string {
	var b strings.Builder
	for _, path := range f.paths {
		data, _ := os.ReadFile(path)
		fmt.Fprintf(&b, "%s:\n%s", filepath.Base(path), data)
	}
	return b.String()
}

// wait polls the files until generation pid has recorded an event of
// kind.
func (f *eventFiles) wait(pid int, kind string) {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("event %q of pid %d in\n%s", kind, pid, f), func() bool {
		for _, r := range f.read() {
			if r.PID == pid && r.Kind == kind {
				return true
			}
		}
		return false
	})
}

// byPID groups records by the process that wrote them, in file order.
func byPID(recs []eventRecord) map[int][]eventRecord {
	m := map[int][]eventRecord{}
	for _, r := range recs {
		m[r.PID] = append(m[r.PID], r)
	}
	return m
}

// wantEvent is what a test expects of one record: its fields but the
// time and the duration, and a part of its error (ErrHas, "" for none).
type wantEvent struct {
	Kind        string
	Generation  int
	OtherPID    int
	Reason      string
	ErrHas      string
	Connections int
	Finished    int
	ForceClosed int
}

// project is r as wantEvent compares it, with ErrHas set to like's when
// r's error contains it, to r's whole error otherwise.
func project(r eventRecord, like wantEvent) wantEvent {
	errHas := r.Err
	if like.ErrHas != "" && strings.Contains(r.Err, like.ErrHas) {
		errHas = like.ErrHas
	}
	return wantEvent{Kind: r.Kind, Generation: r.Generation, OtherPID: r.OtherPID, Reason: r.Reason, ErrHas: errHas,
		Connections: r.Connections, Finished: r.Finished, ForceClosed: r.ForceClosed}
}

// assertSequence checks that recs, one generation's events, are want in
// this order, with nothing else, and that their times never go back.
func assertSequence(t *testing.T, name string, recs []eventRecord, want []wantEvent) {
	t.Helper()
	got := make([]wantEvent, len(recs))
	for i, r := range recs {
		like := wantEvent{}
		if i < len(want) {
			like = want[i]
		}
		got[i] = project(r, like)
	}
	assert.Equal(t, want, got, "the events of %s, in order", name)
	var last time.Time
	for _, r := range recs {
		at, err := time.Parse(time.RFC3339Nano, r.Time)
		require.NoError(t, err, "the time of %s's %q event", name, r.Kind)
		assert.False(t, at.Before(last), "%s's %q event (%s) comes after one at %s", name, r.Kind, r.Time, last.Format(time.RFC3339Nano))
		last = at
	}
}

// find is the first of recs of kind (a zero record if none).
func find(recs []eventRecord, kind string) eventRecord {
	for _, r := range recs {
		if r.Kind == kind {
			return r
		}
	}
	return eventRecord{}
}

// TestEventsInOrder (issue #21, item 1): lineserver -events writes every
// lifecycle event it gets from Options.OnEvent, and each generation's
// events arrive in order, with their fields, through an upgrade by SIGUSR1
// (the old generation drains a held connection), a refusal (SIGUSR1 to the
// new generation while the old one still drains: -max-generations 2), a
// reload by SIGHUP after the file was renamed (the hook reopens it), an
// upgrade by tcpgrace upgrade, a failed upgrade to a broken binary at the
// server's path, and tcpgrace stop. A draining generation's end reaches
// the serving one as "older drained".
func TestEventsInOrder(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	ctl, path := filepath.Join(dir, "control.sock"), filepath.Join(dir, "events.jsonl")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-events", path, "-ready-grace", "300ms",
		"-ready-timeout", "3s", "-drain-timeout", "5s", "-max-generations", "2")
	ev := &eventFiles{t: t, paths: []string{path + ".1", path}}
	tcp := s.addr("tcp:127.0.0.1:0")
	gen1 := s.pid()
	held := holdConn(t, "tcp", tcp)

	gen2 := s.startUpgrade() // SIGUSR1
	ev.wait(gen1, "drain started")
	require.NoError(t, syscall.Kill(gen2, syscall.SIGUSR1), "generation 1 still drains: a third one is one too many")
	ev.wait(gen2, "upgrade refused")
	held.Close()
	ev.wait(gen2, "older drained")
	s.waitExit(gen1, 0)

	require.NoError(t, os.Rename(path, path+".1"), "rotating the events file")
	require.NoError(t, syscall.Kill(gen2, syscall.SIGHUP))
	ev.wait(gen2, "reloaded")

	gen3 := s.ctlUpgrade(ctl).PID
	ev.wait(gen3, "older drained")
	s.waitExit(gen2, 0)

	s.deployBytes([]byte(brokenScript), 0o755)
	require.NoError(t, syscall.Kill(gen3, syscall.SIGUSR1))
	ev.wait(gen3, "upgrade failed")
	s.deploy(lineserverBin)

	r := runTcpgrace(t, "stop", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace stop: %s", r)
	s.waitExit(gen3, 0)

	checkEvents(t, ev, gen1, gen2, gen3)
}

// checkEvents checks what TestEventsInOrder's three generations recorded.
func checkEvents(t *testing.T, ev *eventFiles, gen1, gen2, gen3 int) {
	t.Helper()
	all := ev.read()
	pids := byPID(all)
	failed := find(pids[gen3], "upgrade started").OtherPID
	require.NotZero(t, failed, "the failed upgrade started a process\n%s", ev)
	delete(pids, gen1)
	delete(pids, gen2)
	delete(pids, gen3)
	assert.Empty(t, pids, "only the three generations write events (the broken binary %d wrote none)\n%s", failed, ev)
	pids = byPID(all)
	sig := "signal SIGUSR1"
	assertSequence(t, "generation 1", pids[gen1], []wantEvent{
		{Kind: "ready", Generation: 1},
		{Kind: "upgrade requested", Generation: 1, Reason: sig},
		{Kind: "upgrade started", Generation: 1, OtherPID: gen2},
		{Kind: "next ready", Generation: 1, OtherPID: gen2},
		{Kind: "upgraded", Generation: 1, OtherPID: gen2},
		{Kind: "stopping", Generation: 1, Reason: "upgraded"},
		{Kind: "drain started", Generation: 1, Connections: 1},
		{Kind: "drain ended", Generation: 1, Finished: 1},
	})
	assertSequence(t, "generation 2", pids[gen2], []wantEvent{
		{Kind: "ready", Generation: 2},
		{Kind: "upgrade requested", Generation: 2, Reason: sig},
		{Kind: "upgrade refused", Generation: 2, ErrHas: "too many generations alive"},
		{Kind: "older drained", Generation: 1, OtherPID: gen1, Finished: 1},
		{Kind: "reloaded", Generation: 2},
		{Kind: "upgrade requested", Generation: 2, Reason: "control request"},
		{Kind: "upgrade started", Generation: 2, OtherPID: gen3},
		{Kind: "next ready", Generation: 2, OtherPID: gen3},
		{Kind: "upgraded", Generation: 2, OtherPID: gen3},
		{Kind: "stopping", Generation: 2, Reason: "upgraded"},
		{Kind: "drain started", Generation: 2},
		{Kind: "drain ended", Generation: 2},
	})
	assertSequence(t, "generation 3", pids[gen3], []wantEvent{
		{Kind: "ready", Generation: 3},
		{Kind: "older drained", Generation: 2, OtherPID: gen2},
		{Kind: "upgrade requested", Generation: 3, Reason: sig},
		{Kind: "upgrade started", Generation: 3, OtherPID: failed},
		{Kind: "upgrade failed", Generation: 3, OtherPID: failed, ErrHas: "exit status 3"},
		{Kind: "stopping", Generation: 3, Reason: "stop request"},
		{Kind: "drain started", Generation: 3},
		{Kind: "drain ended", Generation: 3},
	})
	checkEventTimes(t, ev, pids, gen1, gen2)
}

// checkEventTimes checks the upgrades' durations and that the rotated
// file's successor begins with the reload that reopened it. (No order
// across processes: a draining generation mails its report before it
// records its own "drain ended".)
func checkEventTimes(t *testing.T, ev *eventFiles, pids map[int][]eventRecord, gen1, gen2 int) {
	t.Helper()
	for _, gen := range []int{gen1, gen2} {
		next, upgraded := find(pids[gen], "next ready"), find(pids[gen], "upgraded")
		assert.Positive(t, next.TookMS, "pid %d: the hand-off's duration", gen)
		assert.GreaterOrEqual(t, upgraded.TookMS, next.TookMS, "pid %d: upgraded counts from the request, the grace included", gen)
		assert.GreaterOrEqual(t, upgraded.TookMS, 300.0, "pid %d: the 300ms ready grace is part of the upgrade", gen)
	}
	rotated := (&eventFiles{t: t, paths: ev.paths[1:]}).read()
	require.NotEmpty(t, rotated, "events after the rename went to a new file at the path\n%s", ev)
	assert.Equal(t, "reloaded", rotated[0].Kind, "the first line of the new file is the reload that reopened it\n%s", ev)
}
