package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpgrace run as a unit of a real systemd (systemd_harness_test.go), the
// unit the README gives, under load (issue #20).

// readmeRunUnit is the README's ```ini block that runs tcpgrace run,
// with the binaries in dir, the address addr instead of 0.0.0.0:8080, and
// the lines a unit of the test's systemd needs: no default dependencies,
// output to dir/service.log.
func readmeRunUnit(t *testing.T, dir, addr string) string {
	t.Helper()
	lines := strings.Split(string(readFile(t, "../README.md")), "\n")
	var unit []string
	for i := 0; i < len(lines) && unit == nil; i++ {
		if lines[i] != "```ini" {
			continue
		}
		end := i + 1
		for end < len(lines) && lines[end] != "```" {
			end++
		}
		if block := lines[i+1 : end]; strings.Contains(strings.Join(block, "\n"), "tcpgrace run ") {
			unit = block
		}
		i = end
	}
	require.NotNil(t, unit, "README.md has an ```ini unit that runs tcpgrace run")
	text := strings.Join(unit, "\n") + "\n"
	for _, want := range []string{"Type=notify", "KillMode=mixed", "0.0.0.0:8080", "/usr/local/bin/"} {
		require.Contains(t, text, want, "the README's unit")
	}
	text = strings.NewReplacer("/usr/local/bin/", dir+"/", "0.0.0.0:8080", addr).Replace(text)
	return "[Unit]\nDefaultDependencies=no\n" + text +
		"StandardOutput=append:@DIR@/service.log\nStandardError=append:@DIR@/service.log\n"
}

// supervisorStartRe is the supervisor's first line, with its pid.
var supervisorStartRe = regexp.MustCompile(`msg="supervisor start" pid=(\d+) `)

// serviceLog is what the unit wrote.
func (s *systemd) serviceLog() string { return string(readFile(s.t, s.path("service.log"))) }

// waitInstances waits until n instances have been ready, and then until
// the unit is active with the supervisor, pid, as its main process.
func (s *systemd) waitInstances(n int, pid string) {
	s.t.Helper()
	s.waitFor(fmt.Sprintf("%d instances to have been ready", n), func() bool {
		return len(readyRe.FindAllString(s.serviceLog(), -1)) >= n
	})
	s.waitShow("lines.service", "SubState", "running", func(v string) bool { return v == "running" })
	assert.Equal(s.t, pid, s.show("lines.service", "MainPID"), "the supervisor is still the main process")
}

// lastReady is the pid (in systemd's namespace) of the instance that
// became ready last.
func (s *systemd) lastReady() string {
	m := readyRe.FindAllStringSubmatch(s.serviceLog(), -1)
	require.NotEmpty(s.t, m, "an instance was ready")
	return m[len(m)-1][2]
}

// TestSystemdRunUnit: the README's unit for tcpgrace run over lineserver
// (Type=notify, KillMode=mixed, ExecReload=tcpgrace upgrade): systemctl
// start returns with the supervisor as MainPID; two systemctl reloads
// (the second deploying another build), a failed one (a broken build:
// systemctl reload fails, the old instance serves on) and a SIGUSR1 by
// systemctl kill, then a SIGKILL of the app, after which the supervisor
// starts a new instance; under load with not one failed request, the
// unit never leaving active/reloading, MainPID never changing, systemd
// never restarting it. systemctl stop then refuses new clients while a
// held connection is still served, and once it closes the unit is
// inactive with Result=success and the main process's status 0.
func TestSystemdRunUnit(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	installLineserver(t, dir)
	require.NoError(t, copyExecutable(dir+"/tcpgrace", tcpgraceBin(), 0o755), "installing tcpgrace")
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": readmeRunUnit(t, dir, addr)})
	s.mustSystemctl("start", "lines.service")
	require.Regexp(t, readyRe, s.serviceLog(), "Type=notify: systemctl start returned once an instance was ready")
	m := supervisorStartRe.FindStringSubmatch(s.serviceLog())
	require.NotNil(t, m, "the supervisor started\n%s", s.logs())
	main := m[1]
	s.waitInstances(1, main)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")

	s.runReload(2, main)
	l.waitRequests(t, 100)
	deployFile(t, dir, readFile(t, fmt.Sprintf("%s/%s/lineserver", binDir, versions[1])))
	s.runReload(3, main)
	assert.Regexp(t, fmt.Sprintf(`msg=start pid=%s version=%s`, s.lastReady(), versions[1]), s.serviceLog(), "the new instance runs the build just deployed")
	l.waitRequests(t, 100)
	s.runFailedReload(dir, main)
	l.waitRequests(t, 100)
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
	s.waitInstances(4, main)
	l.waitRequests(t, 100)
	l = s.runCrash(t, l, addr, main)
	l.stopLoad(t)
	w.check(t, "upgrades, a failed one and a crash")
	assert.Equal(t, "0", s.show("lines.service", "NRestarts"), "systemd never restarted the unit")

	s.runStopDrains(addr)
}

// runReload runs systemctl reload (tcpgrace upgrade), which returns once
// instance gen serves; the old one then drains and exits 0.
func (s *systemd) runReload(gen int, main string) {
	s.t.Helper()
	old := s.lastReady()
	s.mustSystemctl("reload", "lines.service")
	assert.Regexp(s.t, fmt.Sprintf(`msg="instance ready" pid=%s instance=\d+ generation=%d `, main, gen), s.serviceLog(),
		"generation %d was ready when systemctl reload returned", gen)
	s.waitInstances(gen, main)
	s.waitFor("the old instance to drain and exit 0", func() bool {
		return regexp.MustCompile(fmt.Sprintf(`msg="instance exited" pid=%s instance=%s .*status="exit status 0"`, main, old)).MatchString(s.serviceLog())
	})
}

// runFailedReload deploys a build that fails at start: systemctl reload
// fails, the unit stays active with the old instance serving; the good
// build is deployed again.
func (s *systemd) runFailedReload(dir, main string) {
	s.t.Helper()
	good, serving := readFile(s.t, dir+"/lineserver"), s.lastReady()
	deployFile(s.t, dir, []byte(brokenScript))
	out, err := s.systemctl("reload", "lines.service")
	assert.Error(s.t, err, "systemctl reload fails with the upgrade: %s", out)
	assert.Equal(s.t, "active", s.show("lines.service", "ActiveState"), "the unit stays active")
	assert.Equal(s.t, main, s.show("lines.service", "MainPID"), "with the supervisor as its main process")
	assert.Equal(s.t, serving, s.lastReady(), "the old instance serves on")
	assert.Contains(s.t, s.serviceLog(), "config error: listen address missing", "the broken build's words are in the unit's log")
	deployFile(s.t, dir, good)
}

// runCrash kills the serving instance with SIGKILL: the supervisor starts
// another at once and the unit stays active. Requests the killed process
// had accepted die with it: the load l is quiet at the kill, and a new
// one, returned, starts at once.
func (s *systemd) runCrash(t *testing.T, l *load, addr, main string) *load {
	t.Helper()
	l.stopLoad(t)
	serving, victim := s.lastReady(), 0
	for _, p := range s.unitPIDs("lines.service") {
		if pid, _ := strconv.Atoi(p); nsPID(pid) == serving {
			victim = pid
		}
	}
	require.NotZero(t, victim, "the serving instance, %s in systemd's namespace, is in the unit's cgroup", serving)
	n := len(readyRe.FindAllString(s.serviceLog(), -1))
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL), "killing the app")
	l = startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	s.waitFor("the supervisor to see the crash", func() bool {
		return strings.Contains(s.serviceLog(), `msg="serving instance died"`)
	})
	s.waitInstances(n+1, main)
	l.waitRequests(t, 100)
	return l
}

// nsPID is what process pid (as seen from here) is in its own PID
// namespace, the last of its NSpid; "" if it is gone.
func nsPID(pid int) string {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			return f[len(f)-1]
		}
	}
	return ""
}

// runStopDrains runs systemctl stop while a connection is open: new
// clients are refused, the open one is still served, and once it closes
// the unit stops cleanly.
func (s *systemd) runStopDrains(addr string) {
	s.t.Helper()
	conn, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(s.t, err, "a connection held through the stop")
	defer conn.Close()
	r := bufio.NewReader(conn)
	require.NoError(s.t, echoOnConn(conn, r, "before the stop"), "the held connection is served")
	stopped := make(chan error, 1)
	go func() {
		out, err := s.systemctl("stop", "lines.service")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		stopped <- err
	}()
	refusedWithin(s.t, "tcp", addr, 5*time.Second, syscall.ECONNREFUSED)
	require.NoError(s.t, echoOnConn(conn, r, "during the drain"), "the held connection is served while it drains")
	assert.Equal(s.t, "deactivating", s.show("lines.service", "ActiveState"), "the stop waits for the drain")
	conn.Close()
	select {
	case err := <-stopped:
		require.NoError(s.t, err, "systemctl stop")
	case <-time.After(systemdTimeout):
		s.t.Fatalf("systemctl stop did not return within %v\n%s", systemdTimeout, s.logs())
	}
	assert.Equal(s.t, "inactive", s.show("lines.service", "ActiveState"), "the unit is stopped")
	assert.Equal(s.t, "success", s.show("lines.service", "Result"), "it stopped cleanly, not by a timeout or a kill")
	assert.Equal(s.t, "0", s.show("lines.service", "ExecMainStatus"), "the supervisor exited 0")
	assert.Empty(s.t, s.unitPIDs("lines.service"), "no process of the unit is left")
	assert.Regexp(s.t, `msg="supervisor exit" pid=\d+ status=0`, s.serviceLog())
}

// TestSystemdPythonSocketActivation: the Python example runs under systemd
// as it is, as its README says: a socket unit holds a TCP and a Unix
// socket, the first connection starts the service (Type=notify: its
// READY=1 makes it active), which serves both under load; systemctl stop
// ends it cleanly, the socket unit listens on, and the next connection
// starts it again.
func TestSystemdPythonSocketActivation(t *testing.T) {
	command := strings.Join(pythonLineserver(t), " ")
	dir := t.TempDir()
	addr, sock := freeAddr(t), dir+"/lines.sock"
	s := bootSystemd(t, dir, map[string]string{
		"lines.socket": "[Unit]\nDefaultDependencies=no\n[Socket]\nListenStream=" + addr + "\nListenStream=" + sock + "\n",
		"lines.service": "[Unit]\nDefaultDependencies=no\n[Service]\nType=notify\nExecStart=" + command + " --drain-timeout 2\n" +
			"StandardOutput=append:@DIR@/service.log\nStandardError=append:@DIR@/service.log\n",
	})
	s.mustSystemctl("start", "lines.socket")
	assert.Equal(t, "inactive", s.show("lines.service", "ActiveState"), "nothing started the service yet")
	l := startLoad([]target{{"tcp", addr}, {"unix", sock}}, 1, 1_000_000)
	l.waitRequests(t, 100)
	s.waitShow("lines.service", "SubState", "running", func(v string) bool { return v == "running" })
	l.waitRequests(t, 100)
	l.stopLoad(t)

	s.mustSystemctl("stop", "lines.service")
	assert.Equal(t, "success", s.show("lines.service", "Result"), "the service drained and exited 0")
	assert.Empty(t, s.unitPIDs("lines.service"), "no process of the service is left")
	assert.Equal(t, "listening", s.show("lines.socket", "SubState"), "the socket unit still listens")
	for _, tg := range []target{{"tcp", addr}, {"unix", sock}} {
		assert.NoError(t, echoOnce(tg.network, tg.addr, "again"), "%s %s answers: the service starts again", tg.network, tg.addr)
	}
}

// TestSystemdStopSettings: why examples/systemd keeps the default
// KillMode=control-group for lineserver itself, where tcpgrace run wants
// KillMode=mixed, and gives TimeoutStopSec= more than the drain timeout.
// After an upgrade, generation 1 still drains a held connection when
// systemctl stop comes. With KillMode=mixed systemd SIGKILLs it once the
// main process is gone: the connection is cut at once. With
// KillMode=process it is not told at all: it still serves after the unit
// stopped, left behind. With the default KillMode but a TimeoutStopSec=
// shorter than its drain, it is killed at the timeout, and the stop's
// result is timeout.
func TestSystemdStopSettings(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	installLineserver(t, dir)
	cases := []struct{ name, extra string }{
		{"mixed", "KillMode=mixed\n"}, {"process", "KillMode=process\n"}, {"timeout", "TimeoutStopSec=1s\n"}}
	addrs, units := map[string]string{}, map[string]string{}
	for _, c := range cases {
		addrs[c.name] = freeAddr(t)
		units["lines-"+c.name+".service"] = notifyService("-tcp "+addrs[c.name]+" -handoff=false -drain-timeout 20s", c.extra)
	}
	s := bootSystemd(t, dir, units)
	for _, c := range cases {
		unit := "lines-" + c.name + ".service"
		conn, r := s.heldThroughUpgrade(unit, addrs[c.name])
		defer conn.Close()
		s.mustSystemctl("stop", unit)
		conn.SetDeadline(time.Now().Add(5 * time.Second)) // well within the 20 s drain
		err := echoOnConn(conn, r, "after the stop")
		switch c.name {
		case "mixed":
			assert.Error(t, err, "%s: generation 1 was killed, its drain cut", unit)
			assert.Empty(t, s.unitPIDs(unit), "%s: nothing is left", unit)
		case "process":
			assert.NoError(t, err, "%s: generation 1 still serves after the stop", unit)
			assert.Len(t, s.unitPIDs(unit), 1, "%s: generation 1 is left behind", unit)
		case "timeout":
			assert.Error(t, err, "%s: generation 1 was killed at TimeoutStopSec=, its drain cut", unit)
			assert.Equal(t, "timeout", s.show(unit, "Result"), "%s: the stop timed out", unit)
			assert.Empty(t, s.unitPIDs(unit), "%s: nothing is left", unit)
		}
	}
}

// heldThroughUpgrade starts unit (lineserver on addr), opens a connection
// to generation 1, upgrades by SIGUSR1 to the main process and waits
// until generation 1 drains that connection beside generation 2.
func (s *systemd) heldThroughUpgrade(unit, addr string) (net.Conn, *bufio.Reader) {
	s.t.Helper()
	s.mustSystemctl("start", unit)
	conn, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(s.t, err, "%s: a connection to generation 1", unit)
	r := bufio.NewReader(conn)
	require.NoError(s.t, echoOnConn(conn, r, "held"), "%s: the held connection is served", unit)
	main := s.show(unit, "MainPID")
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", unit)
	s.waitShow(unit, "MainPID", "generation 2", func(v string) bool { return v != main && v != "0" })
	s.waitFor(unit+": generation 1 draining beside 2", func() bool { return len(s.unitPIDs(unit)) == 2 })
	return conn, r
}
