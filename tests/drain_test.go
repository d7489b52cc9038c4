package tests

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// chatter is one persistent connection that sends a line every interval
// and checks each echo within requestBudget, until stopped or its first
// failure.
type chatter struct {
	conn    net.Conn
	replies atomic.Int64
	stop    chan struct{}
	done    chan struct{} // closed when it has ended; err says why
	err     error         // nil if stopped, else the failure
}

func startChatter(t *testing.T, addr string, interval time.Duration) *chatter {
	t.Helper()
	c, err := dial("tcp", addr)
	require.NoError(t, err)
	ch := &chatter{conn: c, done: make(chan struct{}), stop: make(chan struct{})}
	t.Cleanup(func() { c.Close() })
	go func() {
		defer close(ch.done)
		ch.err = ch.run(interval)
		c.Close()
	}()
	return ch
}

func (ch *chatter) run(interval time.Duration) error {
	r := bufio.NewReader(ch.conn)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		line := fmt.Sprintf("persistent-%d\n", n)
		ch.conn.SetDeadline(time.Now().Add(requestBudget))
		if _, err := io.WriteString(ch.conn, line); err != nil {
			return fmt.Errorf("request %d: write: %w", n, err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != line {
			return fmt.Errorf("request %d: sent %q, got %q (%v)", n, line, got, err)
		}
		ch.replies.Add(1)
		select {
		case <-ch.stop:
			return nil
		case <-tick.C:
		}
	}
}

// waitReplies waits for n more replies; it fails the test if the chatter
// fails first.
func (ch *chatter) waitReplies(t *testing.T, n int64) {
	t.Helper()
	target := ch.replies.Load() + n
	waitFor(t, fmt.Sprintf("%d more replies on the persistent connection", n), func() bool {
		select {
		case <-ch.done:
			require.NoError(t, ch.err, "the persistent connection should keep getting replies")
			require.FailNow(t, "the persistent connection ended")
		default:
		}
		return ch.replies.Load() >= target
	})
}

// ended waits for the chatter to end by itself (its connection closed
// under it) and returns why.
func (ch *chatter) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-ch.done:
		return ch.err
	case <-time.After(waitTimeout):
		t.Fatal("the persistent client never noticed its connection was closed")
		return nil
	}
}

// finish stops the chatter and checks it got every reply.
func (ch *chatter) finish(t *testing.T) {
	t.Helper()
	close(ch.stop)
	select {
	case <-ch.done:
	case <-time.After(waitTimeout):
		t.Fatal("the persistent client did not stop")
	}
	assert.NoError(t, ch.err, "every request on the persistent connection gets its reply")
	t.Logf("persistent connection: %d replies", ch.replies.Load())
}

// TestPersistentConnectionAcrossUpgrades: a client holding one connection
// and sending a line every 50 ms across 3 upgrades gets every reply from
// the generation it connected to, which exits only once the client
// closes; meanwhile newer generations upgrade while it drains.
func TestPersistentConnectionAcrossUpgrades(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "60s")
	addr := s.addr("tcp:127.0.0.1:0")
	first := s.pid()
	ch := startChatter(t, addr, 50*time.Millisecond)
	ch.waitReplies(t, 3)
	for i := range 3 {
		s.startUpgrade()
		ch.waitReplies(t, 3)
		require.NoError(t, echoOnce("tcp", addr, fmt.Sprintf("new-%d", i)), "new connections are served meanwhile")
	}
	for _, pid := range s.pids[1:3] {
		s.waitExit(pid, 0) // middle generations had no connection: they exit at once
	}
	assert.NoError(t, processAlive(first), "the first generation still drains its connection")
	ch.finish(t)
	s.waitExit(first, 0)
}

// TestIdleClientCutAtDrainDeadline: a client that never closes is cut at
// the drain deadline, and the old generation then exits 0.
func TestIdleClientCutAtDrainDeadline(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "500ms")
	addr := s.addr("tcp:127.0.0.1:0")
	c, err := dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	_, err = io.WriteString(c, "hello\n")
	require.NoError(t, err)
	got, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello\n", got)
	s.upgrade() // waits for the old generation's exit status 0
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = r.ReadString('\n')
	assert.ErrorIs(t, err, io.EOF, "the idle connection is closed by the old generation at its drain deadline")
	assert.NoError(t, echoOnce("tcp", addr, "still served"), "the new generation serves")
}

// TestStopCutsIdleClientAtDrainDeadline: on a stop signal, as after an
// upgrade, a client that never closes is served until the drain deadline,
// not cut before it, then closed; lineserver exits 0.
func TestStopCutsIdleClientAtDrainDeadline(t *testing.T) {
	const drain = 500 * time.Millisecond
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-drain-timeout", drain.String())
	c, err := dial("tcp", s.addr("tcp:127.0.0.1:0"))
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	require.NoError(t, echoOnConn(c, r, "hello"))
	pid := s.pid()
	begin := time.Now()
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	waitLog(t, s, fmt.Sprintf(`msg="shutting down" pid=%d `, pid))
	require.NoError(t, echoOnConn(c, r, "draining"), "the open connection is served while the server drains")
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err = r.ReadString('\n')
	assert.ErrorIs(t, err, io.EOF, "the connection is closed at the drain deadline")
	assert.GreaterOrEqual(t, time.Since(begin), drain, "not before the drain deadline")
	s.waitExit(pid, 0)
}

// TestGenerationLimit: with -max-generations 2, an upgrade while the
// previous generation still drains fails with a clear error and changes
// nothing; once the old one is gone the same upgrade works.
func TestGenerationLimit(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "60s", "-max-generations", "2")
	addr := s.addr("tcp:127.0.0.1:0")
	first := s.pid()
	ch := startChatter(t, addr, 50*time.Millisecond)
	ch.waitReplies(t, 2)
	second := s.startUpgrade()
	s.failUpgrade("too many generations alive: 3 with the next one, limit 2")
	assert.Equal(t, second, s.pid(), "the serving generation is unchanged")
	assert.NoError(t, processAlive(first), "the draining generation is untouched")
	ch.finish(t)
	s.waitExit(first, 0)
	s.upgrade()
	assert.NoError(t, echoOnce("tcp", addr, "after"), "the generation after the limit serves")
}

// TestStopSignalsDrain: SIGTERM and SIGINT each make lineserver stop
// accepting (its Unix socket file and pid file go at once, so a new client
// finds nobody), serve the connection it has open until the client closes
// it, and then exit 0.
func TestStopSignalsDrain(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock, "-drain-timeout", "60s")
			ch := startChatter(t, s.addr("tcp:127.0.0.1:0"), 50*time.Millisecond)
			ch.waitReplies(t, 2)
			pid := s.pid()
			require.NoError(t, syscall.Kill(pid, sig))
			waitLog(t, s, fmt.Sprintf(`msg="stop signal" pid=%d generation=1 signal=%s`, pid, unix.SignalName(sig)))
			waitLog(t, s, fmt.Sprintf(`msg="shutting down" pid=%d `, pid))
			for _, path := range []string{sock, s.pidFile} {
				_, err := os.Lstat(path)
				assert.ErrorIs(t, err, fs.ErrNotExist, "%s is removed as the drain starts", path)
			}
			assert.Error(t, echoOnce("unix", sock, "late"), "a new client finds nobody")
			ch.waitReplies(t, 3)
			assert.NoError(t, processAlive(pid), "the server waits for its open connection")
			ch.finish(t)
			s.waitExit(pid, 0)
		})
	}
}
