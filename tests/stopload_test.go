package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stopLoad is client traffic that runs into a server's stop: workers
// connect, send a line and read it back, over and over, and every attempt
// is recorded with the time its connection was established, so that the
// ones that connected before the stop can be told from the ones after.
// Unlike load, failures are expected here (connections refused once the
// listener is closed); what matters is which ones fail, and how.
type stopLoad struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	attempts []stopAttempt
}

// stopAttempt is one connection of a stopLoad.
type stopAttempt struct {
	connected time.Time // zero if the dial failed
	err       error     // nil: echoed
}

// startStopLoad runs workers against addr until finish, at most
// maxRequests attempts in all or maxLoadTime; a worker ends at its first
// refused dial (the server is gone).
func startStopLoad(addr string, workers, maxRequests int) *stopLoad {
	l := &stopLoad{stop: make(chan struct{})}
	deadline := time.Now().Add(maxLoadTime)
	sem := make(chan struct{}, maxRequests)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				case sem <- struct{}{}:
				default:
					return // maxRequests reached
				}
				if time.Now().After(deadline) {
					return
				}
				a := attemptEcho(addr, fmt.Sprintf("w%d-%d", w, n))
				l.mu.Lock()
				l.attempts = append(l.attempts, a)
				l.mu.Unlock()
				if a.connected.IsZero() && errors.Is(a.err, syscall.ECONNREFUSED) {
					return
				}
			}
		}()
	}
	return l
}

// attemptEcho is one connection: dial, one line, its echo, close.
func attemptEcho(addr, line string) stopAttempt {
	c, err := net.DialTimeout("tcp", addr, requestBudget)
	if err != nil {
		return stopAttempt{err: err}
	}
	defer c.Close()
	a := stopAttempt{connected: time.Now()}
	c.SetDeadline(a.connected.Add(2 * requestBudget))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		a.err = fmt.Errorf("write: %w", err)
		return a
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case err != nil:
		a.err = fmt.Errorf("read: %w", err)
	case got != line+"\n":
		a.err = fmt.Errorf("sent %q, got %q", line, got)
	}
	return a
}

// halt stops the workers and waits for them; safe to call twice.
func (l *stopLoad) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// ok counts the attempts echoed so far.
func (l *stopLoad) ok() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if a.err == nil {
			n++
		}
	}
	return n
}

// waitOK waits for n more echoed attempts.
func (l *stopLoad) waitOK(t *testing.T, n int) {
	t.Helper()
	target := l.ok() + n
	waitFor(t, fmt.Sprintf("%d echoed connections", target), func() bool { return l.ok() >= target })
}

// finish stops the load and sums up the connections established before
// `before`: how many, how many were reset, and the first few failures;
// and how many attempts after it were refused or reset.
func (l *stopLoad) finish(before time.Time) (early, earlyReset int, earlyErrs []string, late, lateRefused, lateReset int) {
	l.halt()
	for _, a := range l.attempts {
		reset := errors.Is(a.err, syscall.ECONNRESET) || errors.Is(a.err, syscall.EPIPE)
		if !a.connected.IsZero() && a.connected.Before(before) {
			early++
			if reset {
				earlyReset++
			}
			if a.err != nil && len(earlyErrs) < 5 {
				earlyErrs = append(earlyErrs, a.err.Error())
			}
			continue
		}
		late++
		if errors.Is(a.err, syscall.ECONNREFUSED) {
			lateRefused++
		} else if reset {
			lateReset++
		}
	}
	return
}

// logTime is the time of the first log line of generation pid with
// message msg (as the text handler writes it, e.g. `msg="stop signal"`),
// to the millisecond it is logged with: a connection established before
// it was established before the event.
func logTime(t *testing.T, s *server, pid int, msg string) time.Time {
	t.Helper()
	m := regexp.MustCompile(`(?m)^time=(\S+) level=\w+ ` + regexp.QuoteMeta(msg) + fmt.Sprintf(` pid=%d `, pid)).FindStringSubmatch(s.logs.String())
	require.NotNil(t, m, "generation %d should have logged %s\nlogs:\n%s", pid, msg, s.logs)
	at, err := time.Parse(time.RFC3339Nano, m[1])
	require.NoError(t, err, "the log's time")
	return at
}

// TestStopUnderLoadServesQueuedConnections is the regression test for
// connections reset by a stop under load: while a stop signal waited for
// the cancelled next generation to die, nothing was accepted, and every
// connection queued meanwhile was reset when the listener closed (about 5
// per stop). Under load from 8 clients, lineserver is stopped by SIGTERM
// in the middle of an upgrade to a next generation that never gets ready
// (the stop kills it), and, every third round, plainly. Every connection
// established before the stop was over (the cancelled upgrade's failure
// is logged, or for a plain stop the stop signal) is accepted and served,
// not reset; only the last moment before the listener closes can reset
// one. Connections refused afterwards are expected, and counted apart.
func TestStopUnderLoadServesQueuedConnections(t *testing.T) {
	needShell(t, "sleep")
	for round := range 6 {
		upgrading := round%3 != 2
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-drain-timeout", "10s")
		addr := s.addr("tcp:127.0.0.1:0")
		pid := s.pid()
		l := startStopLoad(addr, 8, 200_000)
		t.Cleanup(l.halt) // a failed round leaves no load behind
		l.waitOK(t, 200)
		if upgrading {
			// A next generation that never says ready: the stop cancels
			// the upgrade and kills it.
			s.deployBytes([]byte("#!/bin/sh\nexec sleep 60\n"), 0o755)
			require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
			waitLog(t, s, fmt.Sprintf(`msg="upgrade: started next generation" pid=%d`, pid))
			l.waitOK(t, 100) // accepting goes on during the upgrade
		}
		require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
		s.waitExit(pid, 0)
		stopped := logTime(t, s, pid, `msg="stop signal"`)
		if upgrading {
			stopped = logTime(t, s, pid, `msg="upgrade failed"`)
			require.Contains(t, s.logs.String(), "upgrade cancelled, next generation killed", "round %d: the stop cancelled the upgrade", round)
		}
		early, earlyReset, errs, late, refused, lateReset := l.finish(stopped)
		t.Logf("round %d (upgrading: %v): %d connections before the stop was over, %d reset; after it %d attempts, %d refused, %d reset",
			round, upgrading, early, earlyReset, late, refused, lateReset)
		require.Greater(t, early, 0, "round %d: connections before the stop", round)
		assert.Zero(t, earlyReset, "round %d: no connection established before the stop was over is reset", round)
		assert.Empty(t, errs, "round %d: every connection established before the stop was over is served", round)
	}
}
