package tests

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// How tcpgrace run stops (issue #18): what a stop does to new clients,
// stop and reload signals that arrive during a self-upgrade, and what a
// supervisor killed outright leaves behind.

// refusedWithin dials network addr until the dial fails at once with
// one of want, and fails the test if it still connects after timeout: a
// connection that the dial completes sits in an accept queue. A dial
// reset by the peer raced the last close of the listening socket (the
// handshake was under way as it closed): it is tried again.
func refusedWithin(t *testing.T, network, addr string, timeout time.Duration, want ...error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		c, err = net.DialTimeout(network, addr, time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			continue
		}
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	require.Error(t, err, "a new %s client is still connected %v into the stop: it waits in a queue nobody accepts from", network, timeout)
	for _, w := range want {
		if errors.Is(err, w) {
			return
		}
	}
	t.Fatalf("a new %s client: %v, want one of %v", network, err, want)
}

// TestRunStopRefusesNewClients (issue #18, item 4): once tcpgrace run is
// told to stop, a new client is refused at once, on TCP (ECONNREFUSED)
// and on Unix (the socket file is gone), while a connection held open
// through the drain is still served. Before, the supervisor kept its
// copies of the listening sockets until it exited, so a client that
// connected during the drain hung until it was reset. Both lineserver and
// the Python example close their copies of the sockets as they begin to
// drain.
func TestRunStopRefusesNewClients(t *testing.T) {
	for _, app := range runApps {
		t.Run(app.name, func(t *testing.T) { stopRefusesNewClients(t, app) })
	}
}

func stopRefusesNewClients(t *testing.T, app runApp) {
	dir := t.TempDir()
	tcp, sock, ctl := freeAddr(t), filepath.Join(dir, "s.sock"), filepath.Join(dir, "ctl.sock")
	s := startRun(t, runSpec{
		flags: []string{"-stop-timeout", "3s", "-listen", "tcp://" + tcp, "-listen", "unix://" + sock,
			"-control", ctl},
		command: app.command(t, dir, tcp, sock),
	})
	held := holdConn(t, "tcp", tcp)

	stopAt := time.Now()
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGTERM))
	s.waitLog(`msg="stopping: forwarding the signal to every instance"`)
	refusedWithin(t, "tcp", tcp, time.Second, syscall.ECONNREFUSED)
	refusedWithin(t, "unix", sock, time.Second, syscall.ENOENT, syscall.ECONNREFUSED)
	assert.NoFileExists(t, sock, "the supervisor removes its Unix socket file as the stop begins")
	st := ctlStatus(t, ctl)
	assert.Equal(t, "stopping", st.State, "the control socket answers through the drain")

	held.SetDeadline(time.Now().Add(requestBudget))
	_, err := held.Write([]byte("still\n"))
	require.NoError(t, err)
	var buf [64]byte
	n, err := held.Read(buf[:])
	require.NoError(t, err, "the held connection is served through the drain")
	assert.Equal(t, "still\n", string(buf[:n]))
	select {
	case err := <-s.done:
		t.Fatalf("the supervisor exited (%v) while a connection was still open", err)
	default:
	}
	held.Close()
	require.NoError(t, s.wait(), "the instance drains its last connection and the supervisor exits 0")
	t.Logf("stopped %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
}

// slowCheckWrapper puts at the supervisor's path a script that runs the
// tcpgrace build real, and whose check run (a self-upgrade runs the new
// binary once with TCPGRACE_RUN_CHECK=1 before it execs it) first
// creates marker and then takes a second, as a slow disk or a loaded
// machine might make it.
func slowCheckWrapper(t *testing.T, s *supervised, real, marker string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$TCPGRACE_RUN_CHECK\" = 1 ]; then : >%q; sleep 1; fi\nexec %q \"$@\"\n", marker, real)
	deployAt(t, s.bin, []byte(script))
}

// checkingSelfUpgrade starts lineserver under tcpgrace run with flags,
// deploys the next build behind slowCheckWrapper, sends SIGUSR2 and
// waits until the check run has begun. It returns the supervisor, the
// instance that serves and lineserver's TCP address.
func checkingSelfUpgrade(t *testing.T, flags ...string) (*supervised, int, string) {
	t.Helper()
	needShell(t, "sleep")
	tcp, marker := freeAddr(t), filepath.Join(t.TempDir(), "checking")
	s := startRun(t, runSpec{
		flags:   append([]string{"-listen", "tcp://" + tcp}, flags...),
		command: []string{lineserverBin, "-tcp", tcp},
	})
	serving := s.serving()
	slowCheckWrapper(t, s, tcpgraceBuild(versions[1]), marker)
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2))
	waitFor(t, "the new binary's check run", func() bool { _, err := os.Stat(marker); return err == nil })
	return s, serving, tcp
}

// waitExit waits up to d for the supervisor to exit and returns its exit
// error.
func (s *supervised) waitExit(d time.Duration) error {
	s.t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for cleanup
		return err
	case <-time.After(d):
		s.t.Fatalf("the supervisor still runs %v after it was told to stop\nlogs:\n%s", d, s.logs)
		return nil
	}
}

// TestRunSignalsDuringSelfUpgrade (issue #18, item 3): signals that
// arrive while a self-upgrade's check run takes its time are not lost to
// the exec: a SIGHUP reaches the serving instance at once, and a SIGUSR1
// upgrades the instance once the new supervisor runs. Before, the
// supervisor read no signal while it waited for the check and dropped
// what had arrived at the exec.
func TestRunSignalsDuringSelfUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s, first, tcp := checkingSelfUpgrade(t)
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGHUP))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
	s.waitLog(fmt.Sprintf(`msg="reload signal: no reload hook, ignored" pid=%d`, first))
	s.waitLog(fmt.Sprintf(`msg="supervisor upgraded in place" pid=%d version=%s`, s.selfPID, versions[1]))
	logs := s.logs.String()
	assert.Less(t, strings.Index(logs, "reload signal"), strings.Index(logs, `msg="supervisor upgrading in place"`),
		"the SIGHUP reached the instance while the check still ran")
	s.waitLog(fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d generation=1 phase=draining status="exit status 0"`, first))
	require.NotEqual(t, first, s.serving(), "the SIGUSR1 sent during the check upgraded the instance after the exec")
	holdConn(t, "tcp", tcp).Close()
	require.NoError(t, s.stop())
}

// TestRunStopDuringSelfUpgrade (issue #18, item 3): a SIGTERM that
// arrives while a self-upgrade's check run takes its time cancels the
// self-upgrade (the check is killed, nothing is exec'd) and stops the
// supervisor and its instance. Before, the supervisor dropped it at the
// exec and it and the app ran on.
func TestRunStopDuringSelfUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s, serving, _ := checkingSelfUpgrade(t)
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGTERM))
	require.NoError(t, s.waitExit(5*time.Second), "the stop wins over the self-upgrade, and the instance exits 0")
	assert.Contains(t, s.logs.String(), "stop signal during the supervisor upgrade: cancelling it")
	assert.NotContains(t, s.logs.String(), "supervisor upgraded in place", "no exec happened")
	assert.False(t, processExists(serving), "the instance has stopped")
}

// runDirs lists the supervisors' runtime directories in tmp (where the
// notify socket lives).
func runDirs(t *testing.T, tmp string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(tmp, "tcpgrace-run-*"))
	require.NoError(t, err)
	return dirs
}

// TestRunKilledSupervisorRuntimeDir (issue #18, also checked): a
// supervisor killed with SIGKILL leaves its runtime directory behind, and
// the next supervisor of the user removes it at its start, while the
// directory of a supervisor that is alive (and has upgraded itself in
// place) is left alone: its notify socket still works.
func TestRunKilledSupervisorRuntimeDir(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	tmp := t.TempDir()
	start := func() *supervised {
		tcp := freeAddr(t)
		return startRun(t, runSpec{
			flags:   []string{"-listen", "tcp://" + tcp},
			command: []string{lineserverBin, "-tcp", tcp},
			env:     []string{"TMPDIR=" + tmp},
		})
	}
	killed := start()
	require.Len(t, runDirs(t, tmp), 1, "the supervisor's runtime directory is in TMPDIR")
	stale := runDirs(t, tmp)[0]
	orphan := killed.serving()
	require.NoError(t, syscall.Kill(killed.pid, syscall.SIGKILL))
	require.Error(t, killed.wait())
	require.NoError(t, syscall.Kill(-orphan, syscall.SIGKILL))
	reap(orphan, waitTimeout)
	require.DirExists(t, stale, "a supervisor killed outright cannot remove its directory")

	live := start()
	assert.NoDirExists(t, stale, "the next supervisor removes the directory of the killed one")
	live.waitLog(`msg="removed the runtime directory of a supervisor that is gone"`)
	require.Len(t, runDirs(t, tmp), 1)
	liveDir := runDirs(t, tmp)[0]

	deployBuild(t, live.bin, tcpgraceBuild(versions[1]))
	require.NoError(t, syscall.Kill(live.pid, syscall.SIGUSR2))
	live.waitLog(`msg="supervisor upgraded in place"`) // its lock crosses the exec
	other := start()
	assert.DirExists(t, liveDir, "a live supervisor's directory is left alone, after a self-upgrade too")
	assert.FileExists(t, filepath.Join(liveDir, "notify"))
	assert.Len(t, runDirs(t, tmp), 2)
	live.upgrade() // the new instance says READY=1 on the live supervisor's notify socket
	require.NoError(t, other.stop())
	require.NoError(t, live.stop())
	assert.Empty(t, runDirs(t, tmp), "a supervisor that exits removes its directory")
}

// TestRunControlDuringSelfUpgrade: control requests that arrive while a
// self-upgrade's check runs are answered, and a stop among them cancels
// the self-upgrade and stops, where the loop used to leave them waiting
// until the check ended (a stop failed then with a deadline, unheard).
func TestRunControlDuringSelfUpgrade(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	s, serving, _ := checkingSelfUpgrade(t, "-control", ctl)
	r := runTcpgrace(t, "status", "-control", ctl)
	require.Equal(t, 0, r.code, "status is answered during the check: %s", r)
	r = runTcpgrace(t, "stop", "-control", ctl)
	require.Equal(t, 0, r.code, "a stop is taken during the check: %s", r)
	require.NoError(t, s.waitExit(5*time.Second), "the stop wins over the self-upgrade, and the instance exits 0")
	assert.Contains(t, s.logs.String(), "supervisor upgrade cancelled: stopping")
	assert.NotContains(t, s.logs.String(), "supervisor upgraded in place", "no exec happened")
	assert.False(t, processExists(serving), "the instance has stopped")
}
