//go:build linux

package tcpgrace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parentReply is what the parent generation's HTTP server answers.
const parentReply = "parent"

// moveHarness is a harness whose parent serves nameWeb under RunHTTP,
// with idle keep-alive connections open to it.
type moveHarness struct {
	*harness
	logs  *syncBuffer // the parent's log
	sigs  chan os.Signal
	done  chan error // RunHTTP's result
	conns []*rawHTTP
}

// newMoveHarness starts the parent's RunHTTP, opens n connections and
// sends one request on each, so that each is idle and kept alive.
func newMoveHarness(t *testing.T, n int, child string, more ...func(*Options)) *moveHarness {
	logs := &syncBuffer{}
	more = append(more, func(o *Options) { o.Logger = slog.New(teeHandler{o.Logger.Handler(), slog.NewTextHandler(logs, nil)}) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the parent's log:\n%s", logs.String())
		}
	})
	h := &moveHarness{harness: newHarness(t, 10*time.Second, more...), logs: logs, sigs: make(chan os.Signal, 1), done: make(chan error, 1)}
	h.useChild(child)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, parentReply) })}
	srv := &Server{Upgrader: h.u, Signals: h.sigs, DrainTimeout: 20 * time.Second, IdleGrace: 10 * time.Second}
	go func() { h.done <- srv.RunHTTP(context.Background(), hs, h.web) }()
	for range n {
		c := dialHTTP(t, h.web.Addr().String())
		c.c.SetDeadline(time.Now().Add(30 * time.Second))
		_, body, err := c.get("/")
		require.NoError(t, err)
		require.Equal(t, parentReply, body)
		h.conns = append(h.conns, c)
	}
	return h
}

// upgrade signals an upgrade and returns the child's pid.
func (h *moveHarness) upgrade() int {
	h.sigs <- syscall.SIGUSR1
	return h.startedChild()
}

// ran waits for the parent's RunHTTP to return, drained.
func (h *moveHarness) ran() {
	h.t.Helper()
	select {
	case err := <-h.done:
		require.NoError(h.t, err, "the parent's RunHTTP should end without error")
	case <-time.After(15 * time.Second):
		require.FailNow(h.t, "the parent's RunHTTP should have drained")
	}
}

// What answers checks of "Connection: close".
const (
	keepsOpen = iota // never: the connection stays open
	closes           // always: the old generation drains it
	either           // served before or after a failed move: either
)

// answers sends one request on every connection and checks who answers
// and, unless either, whether it says "Connection: close".
func (h *moveHarness) answers(want string, close int, when string) {
	h.t.Helper()
	for i, c := range h.conns {
		resp, body, err := c.get("/")
		require.NoError(h.t, err, "%s: request on connection %d", when, i)
		assert.Equal(h.t, want, body, "%s: connection %d answered by", when, i)
		if close != either {
			assert.Equal(h.t, close == closes, resp.Close, "%s: connection %d: Connection: close", when, i)
		}
	}
}

// TestRunHTTPMovesIdleConnections: after an upgrade, RunHTTP hands its
// idle keep-alive connections to the next generation, whose RunHTTP
// answers their next requests on the same TCP connections, without
// "Connection: close"; the old generation exits its drain at once,
// counting them as moved.
func TestRunHTTPMovesIdleConnections(t *testing.T) {
	const n = 20
	h := newMoveHarness(t, n, childHTTP)
	pid := h.upgrade()
	h.ran()
	assert.EqualValues(t, n, h.u.Stats().Moved, "every idle connection should have moved")
	h.answers(childReply(pid), keepsOpen, "after the move")
	h.answers(childReply(pid), keepsOpen, "again")
	h.stopChild(pid)
}

// TestRunHTTPMovedConnectionStaysIdle: a connection handed over is idle
// in the next generation as it was in the old one: ReadHeaderTimeout
// (300 ms there) runs from the first bytes of its next request, not from
// the move, so a client that waits a second before that request is
// answered on the same connection. (Taken as a new connection, it would
// be closed after 300 ms, racing the client's request.)
func TestRunHTTPMovedConnectionStaysIdle(t *testing.T) {
	h := newMoveHarness(t, 3, childHTTP)
	pid := h.upgrade()
	h.ran()
	time.Sleep(3 * childHeaderTimeout) // the point: idle longer than ReadHeaderTimeout
	h.answers(childReply(pid), keepsOpen, "after a second idle in the new generation")
	h.stopChild(pid)
}

// TestRunHTTPMoveStateInherited: the parent's Options.State reaches the
// next generation's Inherited once the parent's drain is over, small
// (in the frame) and large (in a memfd).
func TestRunHTTPMoveStateInherited(t *testing.T) {
	for _, size := range []int{5, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			state := []byte(strings.Repeat("s", size-1) + "!")
			h := newMoveHarness(t, 1, childHTTP, func(o *Options) { o.State = func() []byte { return state } })
			pid := h.upgrade()
			h.ran()
			require.NoError(t, h.u.Shutdown(context.Background()))
			path := filepath.Join(h.dir, childStateFile)
			waitUntil(t, "the child to write what it inherited", func() bool {
				b, err := os.ReadFile(path)
				return err == nil && len(b) == len(state)
			})
			b, _ := os.ReadFile(path)
			assert.Equal(t, state, b, "the state inherited should be the one handed over")
			h.stopChild(pid)
		})
	}
}

// TestRunHTTPMoveRefusedKeepsConnections: a next generation that serves
// no server on the connections' listener refuses them (after claimWait);
// the old generation keeps every one and drains it as before: their next
// requests are answered by it, with "Connection: close".
func TestRunHTTPMoveRefusedKeepsConnections(t *testing.T) {
	const n = 10
	h := newMoveHarness(t, n, childHTTPLate)
	pid := h.upgrade()
	h.offered(pid, n)
	h.answers(parentReply, either, "after the refusal")
	h.ran()
	assert.Zero(t, h.u.Stats().Moved)
	syscall.Kill(pid, syscall.SIGKILL)
}

// TestRunHTTPMoveChildKilledMidway: the next generation dies in the
// middle of the move (it holds the connections offered but has not
// acknowledged them): the old generation keeps every connection and
// answers its next request.
func TestRunHTTPMoveChildKilledMidway(t *testing.T) {
	const n = 10
	h := newMoveHarness(t, n, childHTTPLate)
	pid := h.upgrade()
	h.offered(pid, n)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	h.answers(parentReply, either, "after the child died")
	h.ran()
	assert.Zero(t, h.u.Stats().Moved)
}

// TestRunHTTPMoveToMuteChildKeepsConnections: a next generation that
// holds the hand-off channel but never says hello (a build that does not
// speak it) gets nothing: after the hello wait the old generation keeps
// every connection and drains it, answering their next requests itself.
func TestRunHTTPMoveToMuteChildKeepsConnections(t *testing.T) {
	const n = 5
	h := newMoveHarness(t, n, childHTTPMute)
	pid := h.upgrade()
	waitUntil(t, "the hello to time out", func() bool { return strings.Contains(h.logs.String(), "the next generation takes no hand-off") })
	h.answers(parentReply, closes, "with a child that takes nothing")
	h.ran()
	assert.Zero(t, h.u.Stats().Moved)
	h.stopChild(pid)
}

// childSockets is what a ready test child holds: its three inherited
// sockets, the mailbox's two ends and the hand-off channel.
const childSockets = 6

// offered waits until child pid holds the n connections offered to it,
// in the middle of the transaction (childHTTPLate never acknowledges
// before claimWait).
func (h *moveHarness) offered(pid, n int) {
	h.t.Helper()
	waitUntil(h.t, "the child to hold the connections offered", func() bool { return socketCount(pid) >= childSockets+n })
}

// socketCount counts the sockets process pid holds.
func socketCount(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// teeHandler sends every record to both handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	h.a.Handle(ctx, r.Clone())
	return h.b.Handle(ctx, r)
}
func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}
func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{h.a.WithGroup(name), h.b.WithGroup(name)}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
