package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests here run lineserver and examples/http as Type=notify units
// with FileDescriptorStoreMax= and no socket unit (systemd's fd store,
// issue 23): the serving generation stores its sockets at Ready and its
// state as it stops, and systemd hands them to the next start after
// `systemctl restart` or a crash under Restart=.

// fdStoreService is a Type=notify unit for lineserver with an fd store;
// its arguments come from @DIR@/args (ARGS=...), read at each start, so
// that a test can change them between starts.
func fdStoreService(extra string) string {
	return `[Unit]
DefaultDependencies=no
[Service]
Type=notify
EnvironmentFile=@DIR@/args
ExecStart=@DIR@/lineserver $ARGS
ExecStop=-/bin/kill -TERM $MAINPID
ExecStop=-/usr/bin/tail --pid=${MAINPID} -s 0.1 -f /dev/null
StandardOutput=append:@DIR@/service.log
StandardError=append:@DIR@/service.log
TimeoutStartSec=15
TimeoutStopSec=15
FileDescriptorStoreMax=8
` + extra
}

// setArgs writes the arguments of lineserver's next start.
func setArgs(t *testing.T, dir, args string) {
	t.Helper()
	require.NoError(t, os.WriteFile(dir+"/args", []byte("ARGS="+args+"\n"), 0o644), "writing the unit's arguments")
}

// readyPIDs are the pids of every start that said ready as generation 1
// (each start by systemd is one), in order.
func (s *systemd) readyPIDs() []int {
	data, _ := os.ReadFile(s.path("service.log"))
	var pids []int
	for _, m := range regexp.MustCompile(`msg=ready pid=(\d+) generation=1 `).FindAllSubmatch(data, -1) {
		pid, _ := strconv.Atoi(string(m[1]))
		pids = append(pids, pid)
	}
	return pids
}

// waitStart waits until the n-th start (from 1) said ready and systemd
// follows it (MainPID, running), and returns its pid.
func (s *systemd) waitStart(unit string, n int) int {
	s.t.Helper()
	var pid int
	s.waitFor(fmt.Sprintf("start %d to be ready", n), func() bool {
		pids := s.readyPIDs()
		if len(pids) < n {
			return false
		}
		pid = pids[n-1]
		return true
	})
	s.waitShow(unit, "MainPID", fmt.Sprintf("start %d's pid %d", n, pid), func(v string) bool { return v == strconv.Itoa(pid) })
	s.waitShow(unit, "SubState", "running", func(v string) bool { return v == "running" })
	return pid
}

// logOf is what process pid logged.
func (s *systemd) logOf(pid int) string {
	data, _ := os.ReadFile(s.path("service.log"))
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, fmt.Sprintf(" pid=%d ", pid)) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestSystemdFDStoreRestart: three `systemctl restart`s of lineserver
// under load lose nothing: the old process stops accepting and drains,
// the listening socket stays open in systemd's fd store, connections made
// until the next start serves wait in its queue, and each start gets the
// socket back (inherited=true) and serves them. 0 refused, 0 failed, each
// request within requestBudget.
func TestSystemdFDStoreRestart(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	setArgs(t, dir, "-tcp "+addr)
	s := bootSystemd(t, dir, map[string]string{"lines.service": fdStoreService("")})
	s.mustSystemctl("start", "lines.service")
	first := s.waitStart("lines.service", 1)
	assert.Contains(t, s.logOf(first), "addr="+addr+" inherited=false", "the first start binds the socket")
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	prev := first
	for n := 2; n <= 4; n++ {
		s.mustSystemctl("restart", "lines.service")
		pid := s.waitStart("lines.service", n)
		assert.NotEqual(t, prev, pid, "restart %d: a new process", n-1)
		assert.Contains(t, s.logOf(pid), "addr="+addr+" inherited=true", "restart %d: the socket comes from the fd store", n-1)
		l.waitRequests(t, 100)
		prev = pid
	}
	l.stopLoad(t)
	assert.Equal(t, "0", s.show("lines.service", "NRestarts"), "no start was a restart after a failure")
}

// TestSystemdFDStoreCrash: after kill -9 of the main process under
// Restart=always, connections made while no process runs are not refused:
// they wait in the stored socket's queue, and the next start (a new pid,
// the socket inherited from the fd store) echoes each of them.
func TestSystemdFDStoreCrash(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	addr := freeAddr(t)
	setArgs(t, dir, "-tcp "+addr)
	s := bootSystemd(t, dir, map[string]string{"lines.service": fdStoreService("Restart=always\nRestartSec=2\n")})
	s.mustSystemctl("start", "lines.service")
	first := s.waitStart("lines.service", 1)
	require.NoError(t, echoOnce("tcp", addr, "before"), "the first start serves")

	s.mustSystemctl("kill", "-s", "KILL", "--kill-who=main", "lines.service")
	s.waitShow("lines.service", "SubState", "auto-restart: nobody serves", func(v string) bool { return v == "auto-restart" })
	const clients = 10
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		c, err := net.DialTimeout("tcp", addr, requestBudget)
		require.NoError(t, err, "client %d: a connection made while no process runs is not refused", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitTimeout)) // it waits through RestartSec=, longer than requestBudget
			line := fmt.Sprintf("queued-%d\n", i)
			if _, errs[i] = io.WriteString(c, line); errs[i] != nil {
				return
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && got != line {
				err = fmt.Errorf("sent %q, got %q", line, got)
			}
			errs[i] = err
		}()
	}
	second := s.waitStart("lines.service", 2)
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "client %d is served by the next start", i)
	}
	assert.NotEqual(t, first, second, "the pid changed")
	assert.Contains(t, s.logOf(second), "addr="+addr+" inherited=true", "the next start got the socket from the fd store")
	assert.Equal(t, "1", s.show("lines.service", "NRestarts"), "systemd restarted it once")
}

// TestSystemdFDStoreUnclaimed: a socket that the next start no longer
// asks for is closed at its Ready as unclaimed and taken out of the fd
// store (FDSTOREREMOVE=1): its port is free again, and the start after
// that gets only the socket it serves.
func TestSystemdFDStoreUnclaimed(t *testing.T) {
	dir := t.TempDir()
	installLineserver(t, dir)
	keep, drop := freeAddr(t), freeAddr(t)
	setArgs(t, dir, "-tcp "+keep+" -tcp "+drop)
	s := bootSystemd(t, dir, map[string]string{"lines.service": fdStoreService("")})
	s.mustSystemctl("start", "lines.service")
	s.waitStart("lines.service", 1)
	require.NoError(t, echoOnce("tcp", drop, "dropped later"), "the first start serves both")
	s.mustSystemctl("restart", "lines.service")
	s.waitStart("lines.service", 2)
	_, err := net.Listen("tcp", drop)
	require.Error(t, err, "after a restart the fd store still holds the socket the unit serves")

	setArgs(t, dir, "-tcp "+keep)
	s.mustSystemctl("restart", "lines.service")
	third := s.waitStart("lines.service", 3)
	assert.Regexp(t, `closed an inherited socket nobody asked for" pid=\d+ generation=1 listener=tcp:`+regexp.QuoteMeta(drop)+` `,
		s.logOf(third), "the third start got the dropped socket from the store and closed it")
	s.waitFor("the dropped socket's port to be free", func() bool {
		ln, err := net.Listen("tcp", drop)
		if err == nil {
			ln.Close()
		}
		return err == nil
	})
	require.NoError(t, echoOnce("tcp", keep, "kept"), "the kept socket serves")

	s.mustSystemctl("restart", "lines.service")
	fourth := s.waitStart("lines.service", 4)
	log := s.logOf(fourth)
	assert.Contains(t, log, "addr="+keep+" inherited=true", "the kept socket still comes from the store")
	assert.NotContains(t, log, "closed an inherited socket", "systemd handed nothing else: the dropped one left the store")
}

// TestSystemdFDStoreState: examples/http counts its requests and hands the
// count on as its state (Options.State); under an fd store, `systemctl
// restart` keeps it: the old process stores it as it stops, the next
// start reads it (Inherited) and counts on from there.
func TestSystemdFDStoreState(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, copyExecutable(dir+"/http", exampleBin("http"), 0o755), "installing examples/http")
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"web.service": `[Unit]
DefaultDependencies=no
[Service]
Type=notify
ExecStart=@DIR@/http -http ` + addr + `
StandardOutput=append:@DIR@/service.log
StandardError=append:@DIR@/service.log
TimeoutStopSec=15
FileDescriptorStoreMax=4
`})
	s.mustSystemctl("start", "web.service")
	first := s.waitStart("web.service", 1)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: requestBudget}
	for i := range 5 {
		resp, err := client.Get("http://" + addr + "/")
		require.NoError(t, err, "request %d", i)
		resp.Body.Close()
	}
	s.mustSystemctl("restart", "web.service")
	second := s.waitStart("web.service", 2)
	require.NotEqual(t, first, second, "a new process")
	var st struct {
		PID      int   `json:"pid"`
		Requests int64 `json:"requests"`
	}
	s.waitFor("the count to arrive", func() bool {
		resp, err := client.Get("http://" + addr + "/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Requests > 1
	})
	assert.Equal(t, second, st.PID, "the restarted process answers")
	assert.GreaterOrEqual(t, st.Requests, int64(6), "five requests before the restart, carried in the fd store, and this one")
	assert.Contains(t, s.logOf(first), "fd store: state stored", "the old process stored its state as it stopped")
}
