package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParentKilledWhileDraining: the old generation is SIGKILLed in the
// middle of draining a long connection; under load from before the
// hand-off until after the kill, not one request fails: the new
// generation serves throughout and the kill does not disturb it.
func TestParentKilledWhileDraining(t *testing.T) {
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "60s")
	addr := s.addr("tcp:127.0.0.1:0")
	first := s.pid()
	ch := startChatter(t, addr, 50*time.Millisecond)
	ch.waitReplies(t, 2)
	l := startLoad([]target{{"tcp", addr}}, 4, 1_000_000)
	l.waitRequests(t, 200)
	s.startUpgrade()
	waitFor(t, "the old generation to stop accepting", func() bool {
		return strings.Contains(s.logs.String(), fmt.Sprintf(`msg="shutting down" pid=%d`, first))
	})
	l.waitRequests(t, 200)
	// Its listeners are closed and the load's connections it had taken
	// are done: its one socket left is the long connection.
	idleFDKinds(t, first, 1)
	ch.waitReplies(t, 2) // still served while it drains
	require.NoError(t, syscall.Kill(first, syscall.SIGKILL))
	err := s.first.Wait()
	s.exited[first] = true
	assert.ErrorContains(t, err, "signal: killed", "the draining generation died of SIGKILL")
	l.waitRequests(t, 500)
	l.stopLoad(t)
	assert.Error(t, ch.ended(t), "the long connection died with the old generation: that is the point")
}

// TestUpgradeSignalWhileUpgrading: a second SIGUSR1 while an upgrade runs
// is refused with a clear log line, and the first upgrade completes; no
// request fails meanwhile.
func TestUpgradeSignalWhileUpgrading(t *testing.T) {
	needShell(t, "sleep")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0")
	slow := filepath.Join(s.dir, "lineserver.real")
	version := s.deployAs(lineserverBin, slow)
	// A next generation that takes a moment before it is the real server:
	// exec keeps its pid and the inherited fds.
	s.deployBytes([]byte(fmt.Sprintf("#!/bin/sh\nsleep 1\nexec %s \"$@\"\n", slow)), 0o755)
	addr := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	old := s.pid()
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	waitFor(t, "the first upgrade to start", func() bool {
		return strings.Contains(s.logs.String(), "upgrade: started next generation")
	})
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	waitFor(t, "the second upgrade to be refused", func() bool {
		return strings.Contains(s.logs.String(), "an upgrade is already in progress")
	})
	waitFor(t, "the first upgrade to finish", func() bool { return s.pid() != old })
	pid := s.pid()
	s.mu.Lock()
	s.pids = append(s.pids, pid)
	s.mu.Unlock()
	s.upgraded(pid, version, slow) // the script exec'd the new build
	s.waitExit(old, 0)
	l.waitRequests(t, 100)
	l.stopLoad(t)
}

// TestSignalsWhileDraining: after SIGTERM, while a connection keeps the
// server draining, SIGUSR1 is refused with a clear log line and a second
// SIGTERM ends the drain at once: the connection is closed and the server
// exits 0.
func TestSignalsWhileDraining(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "60s")
	ch := startChatter(t, s.addr("tcp:127.0.0.1:0"), 50*time.Millisecond)
	ch.waitReplies(t, 2)
	pid := s.pid()
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	waitFor(t, "the drain to start", func() bool { return strings.Contains(s.logs.String(), `msg="shutting down"`) })
	ch.waitReplies(t, 2) // the open connection is still served while draining
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	waitFor(t, "the refused upgrade", func() bool {
		return strings.Contains(s.logs.String(), `msg="upgrade refused" pid=`)
	})
	assert.Contains(t, s.logs.String(), "upgrader is shut down: this generation drains", "the refusal says why")
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	s.waitExit(pid, 0)
	assert.Error(t, ch.ended(t), "the next request on the connection fails: the second SIGTERM closed it")
}

// TestHundredUpgrades: 100 upgrades as fast as readiness allows, under
// load: no request fails, each new generation runs the build just
// deployed, at most MaxGenerations (4) are ever alive, every old one
// exits 0, and the serving process's fds at upgrade 100 are those at
// upgrade 10.
func TestHundredUpgrades(t *testing.T) {
	if testing.Short() {
		t.Skip("100 upgrades")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
	targets := []target{{"tcp", s.addr("tcp:127.0.0.1:0")}, {"unix", sock}}
	fds := map[int][]string{}
	for _, phase := range []int{10, 100} {
		l := startLoad(targets, 3, 1_000_000)
		for len(s.pids) <= phase {
			s.upgradeWithinLimit()
			assert.LessOrEqual(t, s.liveGenerations(), 4, "live generations after upgrade %d", len(s.pids)-1)
		}
		l.waitRequests(t, 100)
		l.stopLoad(t)
		pid := s.pid()
		waitFor(t, "older generations to finish draining", func() bool { return s.liveGenerations() == 1 })
		for _, old := range s.pids[:len(s.pids)-1] {
			if !s.exited[old] {
				s.waitExit(old, 0)
			}
		}
		fds[phase] = idleFDKinds(t, pid, len(targets))
	}
	assert.Equal(t, fds[10], fds[100], "fds of the serving process at upgrade 10 and at upgrade 100")
}

// upgradeWithinLimit upgrades as soon as the generation limit allows: a
// new generation can be signalled before its parent has even heard that
// it is ready, and then the upgrade is refused with ErrTooManyGenerations;
// wait for an older generation to go and try again.
func (s *server) upgradeWithinLimit() {
	s.t.Helper()
	version := s.deployNext()
	for try := 0; ; try++ {
		old, refusals := s.pid(), strings.Count(s.logs.String(), "too many generations alive")
		require.NoError(s.t, syscall.Kill(old, syscall.SIGUSR1))
		var refused bool
		waitFor(s.t, "a new generation or a refusal", func() bool {
			refused = strings.Count(s.logs.String(), "too many generations alive") > refusals
			return refused || (s.pid() != 0 && s.pid() != old)
		})
		if !refused {
			pid := s.pid()
			s.mu.Lock()
			s.pids = append(s.pids, pid)
			s.mu.Unlock()
			s.waitReadyLog(pid)
			s.upgraded(pid, version, s.bin)
			return
		}
		require.Less(s.t, try, 100, "upgrade refused 100 times in a row")
		waitFor(s.t, "an older generation to exit", func() bool { return s.liveGenerations() < 4 })
	}
}

// TestFDExhaustion: with a tiny RLIMIT_NOFILE the server runs out of fds
// under a burst of connections; accept backs off instead of crashing, and
// every waiting client is served once fds free up.
func TestFDExhaustion(t *testing.T) {
	s := launch(t, lineserverBin, launchOpts{shell: "ulimit -n 24;"}, "-tcp", "127.0.0.1:0")
	addr := s.addr("tcp:127.0.0.1:0")
	const n = 40 // more than the server can hold
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := dial("tcp", addr)
		require.NoError(t, err, "connection %d queues in the backlog even when accept cannot take it", i)
		conns[i] = c
		defer c.Close()
	}
	replies := make(chan error, n)
	for i, c := range conns {
		go func() {
			c.SetDeadline(time.Now().Add(waitTimeout))
			line := fmt.Sprintf("burst-%d\n", i)
			if _, err := io.WriteString(c, line); err != nil {
				replies <- err
				return
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && got != line {
				err = fmt.Errorf("sent %q, got %q", line, got)
			}
			replies <- err
			c.Close() // frees an fd in the server for the next one in the queue
		}()
	}
	for i := range n {
		require.NoError(t, <-replies, "reply %d", i)
	}
	assert.Contains(t, s.logs.String(), "accept: backing off", "the server ran out of fds and backed off")
	assert.Contains(t, s.logs.String(), "too many open files")
	assert.NoError(t, echoOnce("tcp", addr, "recovered"), "the server serves normally afterwards")
	assert.NoError(t, processAlive(s.pid()), "no crash")
}

// TestPIDFileDirectoryMissing: the first generation cannot write its pid
// file; Ready's error is logged, naming the path, and it serves anyway.
func TestPIDFileDirectoryMissing(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "missing", "lineserver.pid")
	s := launch(t, lineserverBin, launchOpts{pidFile: pidFile, noWait: true}, "-tcp", "127.0.0.1:0")
	addr := s.addr("tcp:127.0.0.1:0")
	waitFor(t, "the Ready error", func() bool { return strings.Contains(s.logs.String(), "level=ERROR msg=ready") })
	assert.Contains(t, s.logs.String(), pidFile, "the error names the pid file")
	assert.NoError(t, echoOnce("tcp", addr, "serving"), "serving continues without a pid file")
}

// TestPIDFileDirectoryGoneBeforeUpgrade: the pid file's directory vanishes
// while the server runs; the next generation cannot write its pid file,
// reports that to its parent, and the parent keeps serving.
func TestPIDFileDirectoryGoneBeforeUpgrade(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	require.NoError(t, os.Mkdir(dir, 0o755))
	s := launch(t, lineserverBin, launchOpts{pidFile: filepath.Join(dir, "lineserver.pid")}, "-tcp", "127.0.0.1:0")
	addr := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	pid := s.pid()
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	waitFor(t, "the failed upgrade", func() bool { return strings.Contains(s.logs.String(), `msg="upgrade failed"`) })
	assert.Contains(t, s.logs.String(), "writing pid file", "the parent's error carries the child's reason")
	l.waitRequests(t, 100)
	l.stopLoad(t)
	assert.NoError(t, processAlive(pid), "the old generation keeps serving")
}

// TestReadyThenCrashWithinGrace: the next generation says ready and dies
// 200 ms later. With -ready-grace 1s the old generation, still accepting during the grace,
// sees it die, keeps serving without a failed request and takes its pid
// file back.
func TestReadyThenCrashWithinGrace(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	s := startServer(t, []string{roleEnv + "=ready-crash"}, "-tcp", "127.0.0.1:0", "-ready-grace", "1s")
	addr := s.addr("tcp:127.0.0.1:0")
	l := startLoad([]target{{"tcp", addr}}, 4, 1_000_000)
	l.waitRequests(t, 100)
	pid := s.pid()
	s.deploy(self)
	s.failUpgrade("exited after it said ready")
	l.waitRequests(t, 200)
	l.stopLoad(t)
	assert.Equal(t, pid, s.pid(), "the pid file names the old generation again")
	s.deploy(lineserverBin)
	s.upgrade()
	assert.NoError(t, echoOnce("tcp", addr, "after"), "a good build then takes over and serves")
}

// TestReadyThenCrashWithoutGrace documents the hazard that -ready-grace
// exists for: without it the old generation hands over the moment the
// next one says ready and exits; if the next one then dies (200 ms later
// here), nobody
// serves and the pid file names a dead process, until a supervisor
// restarts the service.
func TestReadyThenCrashWithoutGrace(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	self, err := os.Executable()
	require.NoError(t, err)
	s := startServer(t, []string{roleEnv + "=ready-crash"}, "-tcp", "127.0.0.1:0")
	old := s.pid()
	s.deploy(self)
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	s.waitExit(old, 0) // the old generation handed over and left
	dead := s.pid()
	assert.NotEqual(t, old, dead, "the crashed generation had written its pid")
	assert.Equal(t, roleVersion, startVersion(s.logs.String(), dead), "the crashed generation ran the file deployed")
	waitFor(t, "the crashed generation to be gone", func() bool { return processAlive(dead) != nil })
	// Both generations that held the socket are gone, so nobody serves.
	// (Dialing the address proves nothing either way: once freed, the
	// port may be bound by any other process on the machine.)
	assert.Equal(t, dead, s.pid(), "the pid file names the dead process")
}

// TestFailedChildPIDTakenBack: a next generation that wrote its pid into
// the pid file and then died before saying ready leaves the old
// generation serving, and the pid file names the old one again.
func TestFailedChildPIDTakenBack(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	self, err := os.Executable()
	require.NoError(t, err)
	s := startServer(t, []string{roleEnv + "=pid-crash"}, "-tcp", "127.0.0.1:0")
	pid := s.pid()
	s.deploy(self)
	s.failUpgrade("signal: killed") // failUpgrade also checks the pid file names pid again
	assert.Equal(t, pid, s.pid())
}

// TestChildExitsCleanlyWithinGrace: a next generation that says ready and
// exits 0 within the ready grace left on purpose (it handed over to a
// generation of its own, or was stopped): the hand-off stands and the old
// generation leaves too, rather than serving again beside a newer one.
func TestChildExitsCleanlyWithinGrace(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	self, err := os.Executable()
	require.NoError(t, err)
	// The race detector's exit waits 1 s unless told not to, which would
	// take half of the grace.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	s := startServer(t, []string{roleEnv + "=ready-exit0", "GORACE=" + gorace}, "-tcp", "127.0.0.1:0", "-ready-grace", "2s")
	old := s.pid()
	s.deploy(self)
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	s.waitExit(old, 0)
	m := regexp.MustCompile(`exited 0 after it said ready: hand-off stands".* child=(\d+)`).FindStringSubmatch(s.logs.String())
	require.NotNil(t, m, "the old generation should log that the hand-off stands\nlogs:\n%s", s.logs)
	child, _ := strconv.Atoi(m[1])
	assert.Equal(t, roleVersion, startVersion(s.logs.String(), child), "the next generation ran the file deployed")
}

// TestStopCancelsUpgrade: SIGTERM while an upgrade waits for a slow next
// generation kills that generation; the server then drains and exits 0
// and no new generation appears.
func TestStopCancelsUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	needShell(t, "sleep")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0")
	s.deployBytes([]byte("#!/bin/sh\nexec sleep 30\n"), 0o755)
	old := s.pid()
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR1))
	waitFor(t, "the upgrade to start", func() bool {
		return strings.Contains(s.logs.String(), "upgrade: started next generation")
	})
	require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
	s.waitExit(old, 0)
	assert.Contains(t, s.logs.String(), "upgrade cancelled, next generation killed")
	assert.Equal(t, 1, strings.Count(s.logs.String(), "msg=start "), "no next generation ever ran lineserver")
}

// TestStopSignalToDrainingGeneration: a generation that drains after an
// upgrade takes a first SIGTERM (as a service manager sends to every
// process of the service) as the start of its drain, not as a reason to
// cut its connections; a second one cuts them.
func TestStopSignalToDrainingGeneration(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-drain-timeout", "60s")
	ch := startChatter(t, s.addr("tcp:127.0.0.1:0"), 50*time.Millisecond)
	ch.waitReplies(t, 2)
	old := s.pid()
	s.startUpgrade()
	// Draining once it has read the next generation's ready: the pid file
	// and that generation's own "ready" come a moment before.
	waitFor(t, "the old generation to drain", func() bool {
		return strings.Contains(s.logs.String(), fmt.Sprintf(`msg=draining pid=%d generation=1 reason=upgraded`, old))
	})
	require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
	waitFor(t, "the first stop signal to be noted", func() bool {
		return strings.Contains(s.logs.String(), fmt.Sprintf(`msg="stop signal: already draining; another one closes open connections" pid=%d `, old))
	})
	ch.waitReplies(t, 3) // still served
	require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
	s.waitExit(old, 0)
	assert.Error(t, ch.ended(t), "the second SIGTERM closed the connection")
}
