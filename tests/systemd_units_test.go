package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests here run lineserver as units of a real systemd
// (systemd_harness_test.go), under load, and hold every request to
// requestBudget as the other end-to-end tests do.

// notifyService is a Type=notify unit for lineserver in the test's dir,
// upgraded by SIGUSR1 to the main process (ExecReload= included), stopped
// by ExecStop= lines that signal the main process and wait for it (see
// TestSystemdStopAfterUpgradeDrains); extra lines go to [Service].
func notifyService(args, extra string) string {
	return `[Unit]
DefaultDependencies=no
[Service]
Type=notify
ExecStart=@DIR@/lineserver ` + args + `
ExecReload=/bin/kill -USR1 $MAINPID
ExecStop=-/bin/kill -TERM $MAINPID
ExecStop=-/usr/bin/tail --pid=${MAINPID} -s 0.1 -f /dev/null
StandardOutput=append:@DIR@/service.log
StandardError=append:@DIR@/service.log
TimeoutStartSec=15
TimeoutStopSec=15
` + extra
}

// installLineserver copies the built lineserver into dir, where the units
// run it from.
func installLineserver(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, copyExecutable(dir+"/lineserver", lineserverBin, 0o755), "installing lineserver")
}

// readyPID is the pid (in systemd's namespace) of the lineserver that
// said ready as generation gen, 0 if none has yet.
func (s *systemd) readyPID(gen int) int {
	data, _ := os.ReadFile(s.path("service.log"))
	m := regexp.MustCompile(fmt.Sprintf(`msg=ready pid=(\d+) generation=%d `, gen)).FindSubmatch(data)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(string(m[1]))
	return pid
}

// waitMain waits until generation gen said ready and systemd follows it:
// MainPID is its pid and the unit is active and running again.
func (s *systemd) waitMain(unit string, gen int) int {
	s.t.Helper()
	var pid int
	s.waitFor(fmt.Sprintf("generation %d to be ready", gen), func() bool { pid = s.readyPID(gen); return pid != 0 })
	s.waitShow(unit, "MainPID", fmt.Sprintf("generation %d's pid %d", gen, pid), func(v string) bool { return v == strconv.Itoa(pid) })
	s.waitShow(unit, "SubState", "running", func(v string) bool { return v == "running" })
	assert.Equal(s.t, "active", s.show(unit, "ActiveState"), "the unit is active with generation %d", gen)
	assert.Equal(s.t, fmt.Sprintf("serving, generation %d", gen), s.show(unit, "StatusText"), "the status names the generation")
	return pid
}

// stateWatch records every ActiveState of a unit other than the ones
// allowed, polling until stopped.
type stateWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  []string
	n    int
}

func (s *systemd) watchState(unit string, allowed ...string) *stateWatch {
	w := &stateWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			v, err := s.systemctl("show", "--value", "-p", "ActiveState", unit)
			w.mu.Lock()
			w.n++
			if err == nil && !slices.Contains(allowed, v) && len(w.bad) < 10 {
				w.bad = append(w.bad, v)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// check stops the watch and fails the test if another state was seen.
func (w *stateWatch) check(t *testing.T, what string) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	assert.Empty(t, w.bad, "%s: the unit stays active (%d polls)", what, w.n)
}

// TestSystemdNotifyUpgrades: lineserver as Type=notify starts (READY=1),
// then five upgrades by SIGUSR1 to the main process; after each, MainPID
// is the new generation (MAINPID= from the old main process, the default
// NotifyAccess=main) and the unit never leaves active/reloading; under
// load throughout, no request fails.
func TestSystemdNotifyUpgrades(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr, "")})
	s.mustSystemctl("start", "lines.service") // Type=notify: returns once READY=1 arrived
	s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")
	for gen := 2; gen <= 6; gen++ {
		s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
		s.waitMain("lines.service", gen)
		l.waitRequests(t, 50)
	}
	w.check(t, "five upgrades")
	l.stopLoad(t)
	assert.Equal(t, "0", s.show("lines.service", "NRestarts"), "systemd never restarted the service")
}

// deployFile puts data at dir/lineserver by rename, as a deploy does.
func deployFile(t *testing.T, dir string, data []byte) {
	t.Helper()
	tmp := dir + "/lineserver.new"
	require.NoError(t, writeExecutable(tmp, data, 0o755), "writing the new build")
	require.NoError(t, os.Rename(tmp, dir+"/lineserver"), "deploying the new build")
}

// TestSystemdReload: systemctl reload runs ExecReload= (kill -USR1
// $MAINPID), which upgrades; MainPID follows, twice, under load.
func TestSystemdReload(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr, "")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")
	for gen := 2; gen <= 3; gen++ {
		s.mustSystemctl("reload", "lines.service")
		s.waitMain("lines.service", gen)
		l.waitRequests(t, 50)
	}
	w.check(t, "two reloads")
	l.stopLoad(t)
}

// TestSystemdFailedUpgrade: an upgrade to a broken binary fails; the unit
// stays active with the same MainPID, and systemctl status says why
// (STATUS=); after a good build is deployed again, the next upgrade
// works. Under load throughout.
func TestSystemdFailedUpgrade(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	good, err := os.ReadFile(dir + "/lineserver")
	require.NoError(t, err, "reading the good build")
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr, "")})
	s.mustSystemctl("start", "lines.service")
	main := s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")

	deployFile(t, dir, []byte("\x7fELF but not really\n"))
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
	status := s.waitShow("lines.service", "StatusText", "upgrade failed", func(v string) bool { return strings.Contains(v, "upgrade failed") })
	assert.Contains(t, status, "serving, generation 1; upgrade failed: tcpgrace: the next generation failed: cannot start", "the status says why")
	s.waitShow("lines.service", "SubState", "running", func(v string) bool { return v == "running" })
	assert.Equal(t, strconv.Itoa(main), s.show("lines.service", "MainPID"), "the old generation is still the main process")
	out, _ := s.systemctl("status", "--no-pager", "lines.service") // exit status 0 only for an active unit; checked below
	assert.Contains(t, out, "Active: active (running)", "systemctl status: active\n%s", out)
	assert.Contains(t, out, "exec format error", "systemctl status: the reason\n%s", out)
	l.waitRequests(t, 100)

	deployFile(t, dir, good)
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
	s.waitMain("lines.service", 2)
	l.waitRequests(t, 50)
	w.check(t, "a failed upgrade, then a good one")
	l.stopLoad(t)
}

// TestSystemdStopWhileDraining: systemctl stop while an older generation
// still drains a connection: every process of the unit is gone
// afterwards, the stop took the drain timeout (not TimeoutStopSec), and
// the result is success.
func TestSystemdStopWhileDraining(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr+" -handoff=false -drain-timeout 2s", "")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)

	// A connection to generation 1 that stays open: it drains it.
	c, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(t, err, "a long connection")
	defer c.Close()
	_, err = c.Write([]byte("held\n"))
	require.NoError(t, err, "writing on the long connection")
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(waitTimeout))
	line, err := r.ReadString('\n')
	require.NoError(t, err, "the long connection is served")
	require.Equal(t, "held\n", line, "the echo")
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
	s.waitMain("lines.service", 2)
	l.waitRequests(t, 100)
	l.stopLoad(t)
	require.Len(t, s.unitPIDs("lines.service"), 2, "generation 1 drains the long connection while 2 serves")

	begin := time.Now()
	s.mustSystemctl("stop", "lines.service")
	took := time.Since(begin)
	assert.Empty(t, s.unitPIDs("lines.service"), "no process of the unit is left")
	assert.Equal(t, "inactive", s.show("lines.service", "ActiveState"), "the unit is stopped")
	assert.Equal(t, "success", s.show("lines.service", "Result"), "it stopped cleanly, not by a timeout or a kill")
	assert.Less(t, took, 10*time.Second, "the stop takes the drain timeout, not TimeoutStopSec")
	_, err = r.ReadString('\n')
	assert.Error(t, err, "the long connection was closed at the drain deadline")
}

// TestSystemdSocketActivation: a .socket unit with two TCP and one Unix
// ListenStream= and a ListenDatagram=, all named by FileDescriptorName=,
// starts lineserver (Type=notify) on the first connection; lineserver
// claims the stream sockets by address and keeps serving them across
// two upgrades under load. systemctl stop of the service leaves the
// socket unit listening on every socket, its Unix socket file in place,
// and the next connection starts the service again.
func TestSystemdSocketActivation(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	tcpA, tcpB, udp := freeAddr(t), freeAddr(t), freeUDPAddr(t)
	sock := dir + "/lines.sock"
	s := bootSystemd(t, dir, map[string]string{
		"lines.socket": `[Unit]
DefaultDependencies=no
[Socket]
ListenStream=` + tcpA + `
ListenStream=` + tcpB + `
ListenStream=` + sock + `
ListenDatagram=` + udp + `
FileDescriptorName=lines
`,
		"lines.service": notifyService("-tcp "+tcpA+" -tcp "+tcpB+" -unix "+sock, ""),
	})
	s.mustSystemctl("start", "lines.socket")
	assert.Equal(t, "inactive", s.show("lines.service", "ActiveState"), "nothing started the service yet")
	l := startLoad([]target{{"tcp", tcpA}, {"tcp", tcpB}, {"unix", sock}}, 1, 1_000_000)
	l.waitRequests(t, 100)
	s.waitMain("lines.service", 1)
	logs := readFile(t, s.path("service.log"))
	for _, addr := range []string{tcpA, tcpB, sock} {
		assert.Contains(t, string(logs), "addr="+addr+" inherited=true", "generation 1 serves the socket unit's %s", addr)
	}
	for gen := 2; gen <= 3; gen++ {
		s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
		s.waitMain("lines.service", gen)
		l.waitRequests(t, 100)
	}
	l.stopLoad(t)

	s.mustSystemctl("stop", "lines.service")
	assert.Empty(t, s.unitPIDs("lines.service"), "no process of the service is left")
	assert.Equal(t, "success", s.show("lines.service", "Result"), "the service stopped cleanly: %s", s.mustSystemctl("show", "-p", "ExecMainPID,ExecMainCode,ExecMainStatus,MainPID,NRestarts,InvocationID", "lines.service"))
	assert.Equal(t, "listening", s.show("lines.socket", "SubState"), "the socket unit still listens")
	_, err := os.Lstat(sock)
	assert.NoError(t, err, "the socket unit's Unix socket file is left in place")
	_, err = net.ListenPacket("udp", udp)
	assert.Error(t, err, "the socket unit still holds the datagram socket")
	for _, tg := range []target{{"tcp", tcpA}, {"tcp", tcpB}, {"unix", sock}} {
		assert.NoError(t, echoOnce(tg.network, tg.addr, "again"), "%s %s still answers: the service starts again", tg.network, tg.addr)
	}
}

// freeUDPAddr is a loopback UDP address nobody uses now.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err, "a free UDP port")
	defer c.Close()
	return c.LocalAddr().String()
}

// TestSystemdWatchdog: with WatchdogSec=1, the serving generation pings
// (WATCHDOG=1 every half second), before and after two upgrades, so
// systemd never kills it: the watchdog timestamp keeps moving, MainPID
// stays through a quiet spell of twice the watchdog interval, and the
// unit never restarts. Under load throughout.
func TestSystemdWatchdog(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr, "WatchdogSec=1\nRestart=on-failure\n")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")
	for gen := 2; gen <= 3; gen++ {
		s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
		s.waitMain("lines.service", gen)
		l.waitRequests(t, 50)
	}
	main := s.show("lines.service", "MainPID")
	ping := s.show("lines.service", "WatchdogTimestampMonotonic")
	s.waitShow("lines.service", "WatchdogTimestampMonotonic", "a ping from generation 3", func(v string) bool { return v != ping })
	time.Sleep(2 * time.Second) // not a synchronisation: the watchdog must not fire over two of its intervals
	w.check(t, "two upgrades and a quiet spell under a 1 s watchdog")
	l.stopLoad(t)
	assert.Equal(t, main, s.show("lines.service", "MainPID"), "generation 3 still serves")
	assert.Equal(t, "0", s.show("lines.service", "NRestarts"), "the watchdog never fired")
	assert.Equal(t, "success", s.show("lines.service", "Result"), "no watchdog result")
}

// TestSystemdStopExtendsTimeout: a drain that outlasts TimeoutStopSec= is
// not killed: the main process extends the stop timeout
// (EXTEND_TIMEOUT_USEC=) while it drains, and the stop ends with the
// drain timeout and Result=success.
func TestSystemdStopExtendsTimeout(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	const drain = 4 * time.Second
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr+" -drain-timeout "+drain.String(), "TimeoutStopSec=1500ms\n")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	c, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(t, err, "a long connection")
	defer c.Close()
	require.NoError(t, echoOnConn(c, bufio.NewReader(c), "held"), "the long connection is served")

	begin := time.Now()
	s.mustSystemctl("stop", "lines.service")
	took := time.Since(begin)
	assert.Equal(t, "success", s.show("lines.service", "Result"), "the drain was not killed at TimeoutStopSec=")
	assert.GreaterOrEqual(t, took, drain-500*time.Millisecond, "the stop lasted the drain, well past TimeoutStopSec=")
	assert.Empty(t, s.unitPIDs("lines.service"), "no process of the unit is left")
}

// TestSystemdStopAfterUpgradeDrains: systemctl stop after an upgrade,
// once no older generation is left, lets the serving generation drain.
// Regression: systemd 252 does not wait for a main process that is not
// its child (every generation after the first), and with nothing else
// in the unit's cgroup it sent SIGKILL right after SIGTERM: no drain,
// Result=signal. The units stop the main process with ExecStop= and wait
// for it.
func TestSystemdStopAfterUpgradeDrains(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	const drain = 2 * time.Second
	s := bootSystemd(t, dir, map[string]string{"lines.service": notifyService("-tcp "+addr+" -drain-timeout "+drain.String(), "")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	s.mustSystemctl("kill", "-s", "USR1", "--kill-who=main", "lines.service")
	s.waitMain("lines.service", 2)
	s.waitFor("generation 1 to exit", func() bool { return len(s.unitPIDs("lines.service")) == 1 })
	c, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(t, err, "a long connection to generation 2")
	defer c.Close()
	require.NoError(t, echoOnConn(c, bufio.NewReader(c), "held"), "the long connection is served")

	begin := time.Now()
	s.mustSystemctl("stop", "lines.service")
	took := time.Since(begin)
	assert.Equal(t, "success", s.show("lines.service", "Result"), "generation 2 drained and exited 0, not killed")
	assert.GreaterOrEqual(t, took, drain-500*time.Millisecond, "the stop lasted the drain")
	assert.Empty(t, s.unitPIDs("lines.service"), "no process of the unit is left")
}

// exampleUnit is a unit file of examples/systemd with the binary and the
// addresses moved to the test's own, without default dependencies (which
// would pull in a real boot), and with a service's output in
// service.log, which a failing test prints (there is no journal).
func exampleUnit(t *testing.T, name string, replace ...string) string {
	t.Helper()
	text := string(readFile(t, "../examples/systemd/"+name))
	replace = append(replace, "[Unit]\n", "[Unit]\nDefaultDependencies=no\n",
		"[Service]\n", "[Service]\nStandardOutput=append:@DIR@/service.log\nStandardError=append:@DIR@/service.log\n")
	return strings.NewReplacer(replace...).Replace(text)
}

// TestSystemdExampleUnits: the units in examples/systemd, as shipped but
// for paths, ports and default dependencies, start, upgrade through
// systemctl reload and stop cleanly after the upgrade, under load; the
// socket-activated pair too.
func TestSystemdExampleUnits(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr, activated := freeAddr(t), freeAddr(t)
	sock := dir + "/lines.sock"
	r := []string{"/usr/local/bin/lineserver", dir + "/lineserver", "127.0.0.1:8080", addr,
		"127.0.0.1:8081", activated, "/run/lineserver.sock", sock}
	s := bootSystemd(t, dir, map[string]string{
		"lineserver.service":           exampleUnit(t, "lineserver.service", r...),
		"lineserver-activated.socket":  exampleUnit(t, "lineserver-activated.socket", r...),
		"lineserver-activated.service": exampleUnit(t, "lineserver-activated.service", r...),
	})
	s.mustSystemctl("start", "lineserver.service", "lineserver-activated.socket")
	l := startLoad([]target{{"tcp", addr}, {"tcp", activated}, {"unix", sock}}, 1, 1_000_000)
	l.waitRequests(t, 100)
	for _, unit := range []string{"lineserver.service", "lineserver-activated.service"} {
		s.waitShow(unit, "StatusText", "generation 1 serves", func(v string) bool { return v == "serving, generation 1" })
		first := s.show(unit, "MainPID")
		s.mustSystemctl("reload", unit)
		s.waitShow(unit, "StatusText", "generation 2 serves", func(v string) bool { return v == "serving, generation 2" })
		assert.NotEqual(t, first, s.show(unit, "MainPID"), "%s: MainPID follows the upgrade", unit)
		l.waitRequests(t, 100)
	}
	l.stopLoad(t)
	for _, unit := range []string{"lineserver.service", "lineserver-activated.service"} {
		s.waitFor(unit+"'s generation 1 to exit", func() bool { return len(s.unitPIDs(unit)) == 1 })
		s.mustSystemctl("stop", unit)
		assert.Equal(t, "success", s.show(unit, "Result"), "%s stops cleanly after an upgrade", unit)
		assert.Empty(t, s.unitPIDs(unit), "%s: no process left", unit)
	}
	assert.Equal(t, "listening", s.show("lineserver-activated.socket", "SubState"), "the socket unit still listens")
}
