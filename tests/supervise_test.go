package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// runApp is a program served through tcpgrace run.
type runApp struct {
	name string
	// command installs the program in dir if it needs to and returns
	// its command line, serving whatever it is handed (tcp and sock are
	// the supervisor's sockets, for a program that must name them).
	command func(t *testing.T, dir, tcp, sock string) []string
	// deploy puts the build for upgrade n (1, 2, ...) in place and
	// returns the version its start line will name.
	deploy func(t *testing.T, dir string, n int) string
}

var runApps = []runApp{
	{
		name:    "python",
		command: func(t *testing.T, _, _, _ string) []string { return pythonLineserver(t) },
		deploy:  func(*testing.T, string, int) string { return "python" },
	},
	{
		name: "lineserver",
		command: func(t *testing.T, dir, tcp, sock string) []string {
			bin := filepath.Join(dir, "lineserver")
			deployBuild(t, bin, lineserverBin)
			return []string{bin, "-tcp", tcp, "-unix", sock}
		},
		deploy: func(t *testing.T, dir string, n int) string {
			v := versions[n%len(versions)]
			deployBuild(t, filepath.Join(dir, "lineserver"), filepath.Join(binDir, v, "lineserver"))
			return v
		},
	},
}

// orphanMaker wraps a command in a shell that leaves an orphan behind at
// every start: a sleep whose parent exits at once, so that it is
// re-parented to the nearest subreaper, which must reap it.
func orphanMaker(t *testing.T, command []string) []string {
	t.Helper()
	needShell(t, "sleep")
	return append([]string{"/bin/sh", "-c", `(sleep 0.3 &); exec "$0" "$@"`}, command...)
}

// TestRunUpgradesUnderLoad: the Python example and lineserver, each served
// through tcpgrace run on a TCP and a Unix socket, under load through five
// upgrades (SIGUSR1 to the supervisor, each deploying another build) and
// one SIGKILL of the serving instance: no request fails, the supervisor's
// pid never changes, the orphans the instances leave are re-parented to
// it and reaped, and SIGTERM ends it with status 0 once the instance has
// drained.
func TestRunUpgradesUnderLoad(t *testing.T) {
	for _, app := range runApps {
		t.Run(app.name, func(t *testing.T) { runThrough(t, app, false) })
	}
}

// TestRunAsPID1 is TestRunUpgradesUnderLoad with the supervisor as PID 1
// of a PID namespace of its own (unshare --pid --fork --mount-proc), as
// in a container: orphans come to it as to any init, and SIGTERM ends the
// namespace cleanly: every instance drains and exits 0, then the
// supervisor, with status 0.
func TestRunAsPID1(t *testing.T) {
	for _, app := range runApps {
		t.Run(app.name, func(t *testing.T) { runThrough(t, app, true) })
	}
}

func runThrough(t *testing.T, app runApp, pid1 bool) {
	dir := t.TempDir()
	tcp, sock := freeAddr(t), filepath.Join(dir, "s.sock")
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-listen", "unix://" + sock},
		command: orphanMaker(t, app.command(t, dir, tcp, sock)),
		unshare: pid1,
	})
	s.waitOrphan()
	targets := []target{{"tcp", tcp}, {"unix", sock}}
	upgrades := 0
	upgrade := func(l *load) {
		upgrades++
		version := app.deploy(t, dir, upgrades)
		pid := s.upgrade()
		s.waitLog(fmt.Sprintf(`msg=start pid=%d version=%s`, pid, version))
		l.waitRequests(t, 50)
	}
	l := startLoad(targets, 2, 200_000)
	l.waitRequests(t, 50)
	for range 3 {
		upgrade(l)
	}
	// Requests that the killed process had accepted die with it, whatever
	// a supervisor does: the load is quiet at the kill, and starts again at
	// once, so that its first requests wait in the sockets' queues while
	// nothing serves.
	l.stopLoad(t)
	victim, ready := s.serving(), s.count(readyRe)
	require.NoError(t, syscall.Kill(s.hostPID(victim), syscall.SIGKILL))
	l = startLoad(targets, 2, 200_000)
	s.waitLog(fmt.Sprintf(`msg="serving instance died" pid=%d instance=%d .*status="killed by SIGKILL"`, s.selfPID, victim))
	s.waitCount(readyRe, ready+1)
	l.waitRequests(t, 50)
	for range 2 {
		upgrade(l)
	}
	l.stopLoad(t)
	assert.Equal(t, 7, s.count(readyRe), "one first start, five upgrades, one restart")
	s.checkStablePID()
	require.Equal(t, fmt.Sprint(s.selfPID), strings.TrimSpace(string(readFile(t, s.pidFile))), "the pid file still names the supervisor")
	s.waitNoOrphans()

	serving := s.serving()
	require.NoError(t, s.stop(), "SIGTERM: the instance drains and the supervisor exits 0\nlogs:\n%s", s.logs)
	assert.Regexp(t, fmt.Sprintf(`msg="instance exited" pid=%d instance=%d .*status="exit status 0"`, s.selfPID, serving), s.logs.String())
	assert.Regexp(t, fmt.Sprintf(`msg="supervisor exit" pid=%d status=0`, s.selfPID), s.logs.String())
	assert.NoFileExists(t, s.pidFile, "the pid file is removed at exit")
	assert.NoFileExists(t, sock, "the Unix socket file is removed at exit")
}

// waitOrphan waits until an orphan of an instance has been re-parented
// to the supervisor.
func (s *supervised) waitOrphan() {
	s.t.Helper()
	waitFor(s.t, "an orphan re-parented to the supervisor", func() bool { return len(s.childrenNamed("sleep")) > 0 })
}

// waitNoOrphans waits until no orphan is left: each must have been
// reaped, not left a zombie.
func (s *supervised) waitNoOrphans() {
	s.t.Helper()
	waitFor(s.t, "the supervisor to reap every orphan (no sleep among its children, not even a zombie)",
		func() bool { return len(s.childrenNamed("sleep")) == 0 })
}

// childrenNamed lists the supervisor's children whose command is name.
func (s *supervised) childrenNamed(name string) []int {
	var pids []int
	for _, pid := range s.children() {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// upgradeFailedRe is the supervisor's line for a failed upgrade.
var upgradeFailedRe = regexp.MustCompile(`msg="upgrade failed" .*`)

// TestRunFailedUpgradeKeepsServing: a new instance that exits before it
// is ready, one that never gets ready, and a command that is not there:
// each upgrade fails with the reason logged, the failed instance is
// killed, and the serving instance serves on under load, with no failed
// request; the next good build then takes over.
func TestRunFailedUpgradeKeepsServing(t *testing.T) {
	dir := t.TempDir()
	app, tcp, sock := filepath.Join(dir, "app"), freeAddr(t), filepath.Join(dir, "s.sock")
	deployBuild(t, app, lineserverBin)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-listen", "unix://" + sock, "-ready-timeout", "1s"},
		command: []string{app, "-tcp", tcp, "-unix", sock},
	})
	serving := s.serving()
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 2, 200_000)
	l.waitRequests(t, 50)
	for _, c := range []struct {
		name, reason string
		deploy       func()
	}{
		{"exits", `exited \(exit status 3\) before it was ready`, func() { deployAt(t, app, []byte("#!/bin/sh\nexit 3\n")) }},
		{"never ready", `not ready within -ready-timeout 1s`, func() { deployAt(t, app, []byte("#!/bin/sh\nexec sleep 30\n")) }},
		{"missing", `no such file or directory`, func() { require.NoError(t, os.Remove(app)) }},
	} {
		c.deploy()
		failed := s.count(upgradeFailedRe)
		require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
		s.waitCount(upgradeFailedRe, failed+1)
		line := upgradeFailedRe.FindAllString(s.logs.String(), -1)[failed]
		assert.Regexp(t, c.reason, line, "%s: the failed upgrade's reason", c.name)
		assert.Contains(t, line, fmt.Sprintf("serving=%d", serving), "%s: the old instance still serves", c.name)
		if m := regexp.MustCompile(` instance=(\d+)`).FindStringSubmatch(line); m != nil && m[1] != "0" {
			s.waitLog(fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%s `, m[1]))
		}
		l.waitRequests(t, 50)
		assert.Equal(t, serving, s.serving(), "%s: no other instance became ready", c.name)
	}
	deployBuild(t, app, filepath.Join(binDir, versions[1], "lineserver"))
	pid := s.upgrade()
	s.waitLog(fmt.Sprintf(`msg=start pid=%d version=%s`, pid, versions[1]))
	l.waitRequests(t, 50)
	l.stopLoad(t)
	require.NoError(t, s.stop())
}

// TestRunReadyDelayAndStopTimeout: a program that cannot say READY=1 is
// ready once it has run for -ready-delay; one that ignores SIGTERM is
// killed after -stop-timeout, both when an upgrade replaces it and when
// the supervisor stops, whose exit status is then the serving instance's
// (128+9: killed).
func TestRunReadyDelayAndStopTimeout(t *testing.T) {
	needShell(t, "sleep")
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://127.0.0.1:0", "-ready-delay", "200ms", "-stop-timeout", "300ms"},
		command: []string{"/bin/sh", "-c", `trap "" TERM; exec sleep 30`},
	})
	assert.Regexp(t, `msg="instance ready" .* how="still running after -ready-delay"`, s.logs.String())
	first := s.serving()
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
	s.waitCount(readyRe, 2)
	drained := time.Now()
	s.waitLog(fmt.Sprintf(`msg="instance did not exit within -stop-timeout: killing its process group" pid=\d+ instance=%d `, first))
	s.waitLog(fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d .*status="killed by SIGKILL"`, first))
	assert.Less(t, time.Since(drained), 2*time.Second, "killed soon after the 300 ms stop timeout")
	err := s.stop()
	require.ErrorContains(t, err, "exit status 137", "the serving instance was killed, and the supervisor says so")
}

// TestRunSelfUpgrade: SIGUSR2 replaces the supervisor's own program in
// place under load: the new build takes over the sockets and the running
// instance with the same pid, serves on without a failed request,
// upgrades the instance and reaps the old one; a new binary that is no
// tcpgrace fails its check and the running supervisor carries on.
func TestRunSelfUpgrade(t *testing.T) {
	dir := t.TempDir()
	app, tcp, sock := filepath.Join(dir, "lineserver"), freeAddr(t), filepath.Join(dir, "s.sock")
	deployBuild(t, app, lineserverBin)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-listen", "unix://" + sock},
		command: []string{app, "-tcp", tcp, "-unix", sock},
	})
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 2, 200_000)
	l.waitRequests(t, 50)

	deployBuild(t, s.bin, tcpgraceBuild(versions[1]))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2))
	s.waitLog(fmt.Sprintf(`msg="supervisor upgraded in place" pid=%d version=%s from_version=%s instances=1`, s.selfPID, versions[1], versions[0]))
	l.waitRequests(t, 50)
	s.upgrade() // by the new build, which reaps the instance the old one started
	l.waitRequests(t, 50)

	deployAt(t, s.bin, []byte("#!/bin/sh\nexit 1\n"))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2))
	s.waitLog(`msg="supervisor upgrade failed; this version keeps running" .*failed its check`)
	l.waitRequests(t, 50)
	s.upgrade()
	l.waitRequests(t, 50)
	l.stopLoad(t)

	s.checkStablePID()
	require.NoError(t, s.stop())
	assert.NoFileExists(t, sock, "the Unix socket file the first build bound is removed by the last")
	assert.NoFileExists(t, s.pidFile)
}

// TestRunNotify: on the notify socket only instances count: a READY=1
// from another process (the test, which may enter the socket's private
// directory as root or as the supervisor's user) is ignored, and the
// instance is ready when it says so itself, after its start. A service
// manager above the supervisor hears READY=1 with MAINPID= naming the
// supervisor (the stable pid), the serving instance's STATUS=, and
// STOPPING=1.
func TestRunNotify(t *testing.T) {
	needShell(t, "sleep")
	mgrPath := filepath.Join(t.TempDir(), "manager.sock")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: mgrPath, Net: "unixgram"})
	require.NoError(t, err)
	defer mgr.Close()
	tcp := freeAddr(t)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp},
		command: []string{"/bin/sh", "-c", `sleep 0.3; exec "$0" "$@"`, lineserverBin, "-tcp", tcp},
		env:     []string{"NOTIFY_SOCKET=" + mgrPath},
		noWait:  true,
	})
	s.waitLog(`msg="instance started"`)
	path := regexp.MustCompile(`msg="supervisor start" .*notify_socket=(\S+)`).FindStringSubmatch(s.logs.String())
	require.NotNil(t, path, "the supervisor logs its notify socket")
	spoof, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path[1], Net: "unixgram"})
	require.NoError(t, err)
	_, err = spoof.Write([]byte("READY=1\nSTATUS=spoofed\n"))
	spoof.Close()
	require.NoError(t, err)

	s.waitCount(readyRe, 1)
	logs := s.logs.String()
	start := strings.Index(logs, fmt.Sprintf("msg=start pid=%d ", s.serving()))
	require.GreaterOrEqual(t, start, 0, "lineserver started")
	assert.Less(t, start, readyRe.FindStringIndex(logs)[0], "ready only after the instance started and said so, not at the spoofed READY=1")
	assert.NotContains(t, logs, "spoofed")

	got := readNotes(t, mgr, "READY=1")
	assert.Contains(t, got, fmt.Sprintf("MAINPID=%d\n", s.selfPID), "MAINPID= names the supervisor")
	assert.Contains(t, got, "STATUS=serving: generation 1", "STATUS= names the serving instance")
	require.NoError(t, s.stop())
	readNotes(t, mgr, "STOPPING=1")
}

// readNotes reads sd_notify messages on conn until one contains want,
// and returns that one.
func readNotes(t *testing.T, conn *net.UnixConn, want string) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		require.NoError(t, err, "waiting for %s from the supervisor", want)
		if msg := string(buf[:n]); strings.Contains(msg, want+"\n") {
			return msg
		}
	}
}

// TestRunMaxInstances: instances that drain long (lineserver keeps
// serving a connection until its client closes) count against
// -max-instances: with 3, two draining ones and the serving one leave no
// room, and an upgrade is refused with the reason; once the connections
// close and the old instances exit, the next upgrade goes through.
func TestRunMaxInstances(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	tcp := freeAddr(t)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-max-instances", "3"},
		command: []string{lineserverBin, "-tcp", tcp},
	})
	var held []*queuedLine
	for i := range 2 {
		q := queueLine(t, "tcp", tcp, fmt.Sprintf("held-%d", i))
		require.NoError(t, q.readEcho(), "the serving instance answers, and now holds the connection")
		held = append(held, q)
		n, old := s.count(readyRe), s.serving()
		require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
		s.waitCount(readyRe, n+1)
		// The replaced instance has closed its listener (it logs this once
		// it has): the next connection can only reach the new one.
		s.waitLog(fmt.Sprintf(`msg="shutting down" pid=%d `, old))
	}
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR1))
	s.waitLog(`msg="upgrade refused" .*too many instances alive: 3, the most -max-instances allows`)
	for _, q := range held {
		q.c.Close()
	}
	s.waitCount(regexp.MustCompile(`msg="instance exited" .*phase=draining status="exit status 0"`), 2)
	s.upgrade()
	require.NoError(t, s.stop())
}

// readEcho reads the echo of the queued line, leaving the connection open.
func (q *queuedLine) readEcho() error {
	if q.err != nil {
		return q.err
	}
	got, err := q.r.ReadString('\n')
	if err == nil && got != q.line+"\n" {
		err = fmt.Errorf("sent %q, got %q", q.line, got)
	}
	return err
}

// TestRunControl: with -control, tcpgrace upgrade upgrades through the
// supervisor under load and exits 0 naming the new instance and the old
// one; it exits 1 with the reason when the new instance fails, and
// -timeout kills a start that takes too long, the old instance serving on
// both times; tcpgrace status lists the instances and the last failure;
// the control socket's path answers across a self-upgrade; tcpgrace stop
// ends the supervisor, which removes the socket file.
func TestRunControl(t *testing.T) {
	dir := t.TempDir()
	app, tcp, ctl := filepath.Join(dir, "app"), freeAddr(t), filepath.Join(dir, "ctl.sock")
	deployBuild(t, app, lineserverBin)
	s := startRun(t, runSpec{
		flags:   []string{"-listen", "tcp://" + tcp, "-control", ctl},
		command: []string{app, "-tcp", tcp},
	})
	l := startLoad([]target{{"tcp", tcp}}, 2, 200_000)
	l.waitRequests(t, 50)

	old := s.serving()
	up := ctlUpgradeRun(t, ctl)
	assert.Equal(t, old, up.OldPID, "the reply names the instance that served")
	assert.Equal(t, 2, up.Generation)
	require.Equal(t, up.PID, s.serving(), "the reply names the instance that serves now")
	st := ctlStatus(t, ctl)
	assert.Equal(t, s.selfPID, st.PID, "the supervisor answers")
	assert.Equal(t, "serving", st.State)
	assert.Equal(t, 2, st.Generation, "the serving instance's generation")
	require.NotNil(t, st.Supervisor, "with its instances: %+v", st)
	require.NotEmpty(t, st.Supervisor.Instances)
	assert.Equal(t, up.PID, st.Supervisor.Instances[len(st.Supervisor.Instances)-1].PID)
	l.waitRequests(t, 50)

	deployAt(t, app, []byte("#!/bin/sh\nexit 3\n"))
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	assert.Equal(t, 1, r.code, "a failed upgrade exits 1: %s", r)
	assert.Contains(t, r.stderr, "exited (exit status 3) before it was ready", "and says why")
	deployAt(t, app, []byte("#!/bin/sh\nexec sleep 30\n"))
	r = runTcpgrace(t, "upgrade", "-control", ctl, "-timeout", "300ms")
	assert.Equal(t, 1, r.code, "an upgrade past -timeout exits 1: %s", r)
	assert.Contains(t, r.stderr, "cancelled", "and says why")
	s.waitLog(`msg="instance exited" pid=\d+ instance=\d+ generation=4 phase=draining status="killed by SIGKILL"`)
	st = ctlStatus(t, ctl)
	assert.Contains(t, st.Supervisor.LastFailure, "cancelled", "status keeps the last failure")
	assert.Equal(t, up.PID, s.serving(), "the old instance serves on")
	r = runTcpgrace(t, "status", "-control", ctl, "-human")
	assert.Regexp(t, fmt.Sprintf(`(?m)^%d +2 +serving `, up.PID), r.stdout, "status -human lists the instances: %s", r)
	assert.Regexp(t, `^tcpgrace run pid \d+, serving since \S+; serving generation 2\n`, r.stdout,
		"its first line is the supervisor's pid and the serving instance's generation, not the supervisor's as a generation: %s", r)
	assert.Contains(t, r.stdout, "last failure: ", "and the last failure: %s", r)
	l.waitRequests(t, 50)

	deployBuild(t, app, lineserverBin)
	deployBuild(t, s.bin, tcpgraceBuild(versions[1]))
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGUSR2))
	s.waitLog(`msg="supervisor upgraded in place"`)
	ctlUpgradeRun(t, ctl)
	l.waitRequests(t, 50)
	l.stopLoad(t)

	r = runTcpgrace(t, "stop", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace stop: %s", r)
	require.NoError(t, s.wait(), "the supervisor drains and exits 0")
	assert.NoFileExists(t, ctl, "the control socket's file is removed at exit")
}

// ctlUpgradeRun runs tcpgrace upgrade against a supervisor, which must
// succeed, and decodes its one line.
func ctlUpgradeRun(t *testing.T, ctl string) control.Upgraded {
	t.Helper()
	r := runTcpgrace(t, "upgrade", "-control", ctl)
	require.Equal(t, 0, r.code, "tcpgrace upgrade should succeed: %s", r)
	var up control.Upgraded
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &up), "one line of JSON: %s", r)
	require.NotZero(t, up.PID, "it names the new instance: %s", r)
	return up
}
