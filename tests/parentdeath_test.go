package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestParentKilledWhileNextStarts pins issue #10's first deploy-time
// fault: the serving generation dies (here SIGKILL, as the OOM killer or
// a deploy script's kill -9 would) 100 ms into an upgrade whose next
// generation takes 300 ms to start (a wrapper that sleeps, then execs the
// real build). The next generation used to see that its parent pid had
// changed, ignore TCPGRACE_FDS, cold-start beside its own leaked copies of
// the sockets and fail with "address already in use": nothing served.
// Now it takes the sockets it was handed and serves them alone, and
// connections queued while nobody accepted are answered.
func TestParentKilledWhileNextStarts(t *testing.T) {
	needShell(t, "sleep")
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
	tcp := s.addr("tcp:127.0.0.1:0")
	real := filepath.Join(s.dir, "lineserver.real")
	version := s.deployAs(lineserverBin, real)
	s.deployBytes([]byte(fmt.Sprintf("#!/bin/sh\nsleep 0.3\nexec %s \"$@\"\n", real)), 0o755)
	old := s.pid()
	signalled := time.Now()
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	waitLog(t, s, fmt.Sprintf(`msg="upgrade: started next generation" pid=%d `, old))
	// The fault itself: no readiness signal says when to kill, that is
	// the point; 100 ms after the signal the wrapper still sleeps.
	time.Sleep(time.Until(signalled.Add(100 * time.Millisecond)))
	require.ErrorContains(t, s.killFirst(), "signal: killed", "generation %d dies of SIGKILL", old)
	next := s.adopted()
	require.Len(t, next, 1, "the generation the dead parent started is re-parented to us\nlogs:\n%s", s.logs)
	// Nobody accepts now: these wait in the sockets' queues.
	queued := []*queuedLine{queueLine(t, "tcp", tcp, "queued-tcp"), queueLine(t, "unix", sock, "queued-unix")}
	s.waitServing(next[0])
	s.upgraded(next[0], version, real)
	for _, q := range queued {
		assert.NoError(t, q.answer(), "a connection queued while nobody accepted is answered by the new generation")
	}
	assert.NoError(t, echoOnce("tcp", tcp, "after"), "the new generation serves the TCP socket it was handed")
	assert.NoError(t, echoOnce("unix", sock, "after"), "the new generation serves the Unix socket it was handed")
	assert.NotContains(t, s.logs.String(), "address already in use", "no generation cold-starts beside the handed-over sockets")
	s.stop()
}

// TestParentKilledEarlyInUpgrade sweeps the kill of the serving
// generation from 0 to 10 ms after the upgrade signal, so that it lands
// before, during and after the next generation is started. A kill before
// the start leaves nothing to serve (no supervisor here); but whenever a
// next generation was started, it must serve the sockets it was handed.
func TestParentKilledEarlyInUpgrade(t *testing.T) {
	started := 0
	for ms := 0; ms <= 10; ms++ {
		sock := filepath.Join(t.TempDir(), "s.sock")
		s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
		tcp := s.addr("tcp:127.0.0.1:0")
		version := s.deployNext()
		signalled := time.Now()
		require.NoError(t, syscall.Kill(s.pid(), syscall.SIGUSR1))
		time.Sleep(time.Until(signalled.Add(time.Duration(ms) * time.Millisecond))) // the fault's timing, swept
		if err := s.killFirst(); err == nil {
			t.Logf("kill at %d ms: after the hand-off, the first generation had exited 0", ms)
		} else {
			require.ErrorContains(t, err, "signal: killed", "kill at %d ms: the first generation dies of SIGKILL", ms)
		}
		next := s.adopted()
		require.LessOrEqual(t, len(next), 1, "kill at %d ms: one upgrade starts at most one next generation", ms)
		if len(next) == 0 {
			t.Logf("kill at %d ms: before the next generation was started; nothing can serve", ms)
			continue
		}
		started++
		s.waitServing(next[0])
		s.upgraded(next[0], version, s.bin)
		assert.NoError(t, echoOnce("tcp", tcp, "after"), "kill at %d ms: the next generation serves TCP", ms)
		assert.NoError(t, echoOnce("unix", sock, "after"), "kill at %d ms: the next generation serves the Unix socket", ms)
		s.stop()
	}
	t.Logf("a next generation had been started in %d of 11 runs", started)
}

// killFirst SIGKILLs the first generation, reaps it and returns its
// exit (nil if it had exited 0 by itself first): every process it started
// is then re-parented to us, a child subreaper.
func (s *server) killFirst() error {
	s.t.Helper()
	pid := s.first.Process.Pid
	require.NoError(s.t, syscall.Kill(pid, syscall.SIGKILL), "killing generation %d", pid) // a zombie too
	err := s.first.Wait()
	s.exited[pid] = true
	return err
}

// adopted lists the processes of this server that were re-parented to us
// (our children, not started by the test, their command line naming the
// server's pid file): the generations whose parent died.
func (s *server) adopted() []int {
	s.t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(s.t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == s.first.Process.Pid || parentPID(pid) != os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmdline), "\x00"+s.pidFile+"\x00") {
			pids = append(pids, pid)
		}
	}
	s.mu.Lock()
	s.pids = append(s.pids, pids...) // killed at cleanup if still alive
	s.mu.Unlock()
	return pids
}

// parentPID is the parent pid of process pid (0 if it is gone).
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// waitServing waits until generation pid, our child, is ready (its pid
// file names it and it logged ready); it fails the test at once if pid
// exits first.
func (s *server) waitServing(pid int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("generation %d to be ready\nlogs:\n%s", pid, s.logs), func() bool {
		var ws unix.WaitStatus
		if wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid || errors.Is(err, unix.ECHILD) {
			s.exited[pid] = true
			s.t.Fatalf("generation %d exited (%v) instead of serving the sockets it was handed\nlogs:\n%s", pid, ws, s.logs)
		}
		return s.pid() == pid
	})
	s.waitReadyLog(pid)
}

// queuedLine is a line sent on a connection that nobody has accepted yet.
type queuedLine struct {
	c    net.Conn
	r    *bufio.Reader
	line string
	err  error
}

// queueLine connects to addr and sends line without waiting for the
// answer; the connection is closed when the test ends.
func queueLine(t *testing.T, network, addr, line string) *queuedLine {
	t.Helper()
	c, err := dial(network, addr)
	require.NoError(t, err, "connecting to %s while nobody accepts: the connection waits in the queue", addr)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	_, err = io.WriteString(c, line+"\n")
	return &queuedLine{c: c, r: bufio.NewReader(c), line: line, err: err}
}

// answer reads the echo of the queued line and closes the connection.
func (q *queuedLine) answer() error {
	defer q.c.Close()
	if q.err != nil {
		return q.err
	}
	got, err := q.r.ReadString('\n')
	if err == nil && got != q.line+"\n" {
		err = fmt.Errorf("sent %q, got %q", q.line, got)
	}
	return err
}
