//go:build linux

package quic

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// The e2e test's load and timing.
const (
	e2eWorkers     = 4
	e2eInterval    = 5 * time.Millisecond
	e2eBudget      = time.Second // per request, never retried
	e2eUpgrades    = 5
	e2eKeepOld     = 300 * time.Millisecond // workers keep their old connections this long after the new generation is ready
	e2eGoawayAfter = 3 * time.Second        // the servers' -goaway-after
)

// result is one request of a worker.
type result struct {
	epoch int // the upgrades done when the worker opened the connection
	at    time.Time
	pid   int
	err   error
}

// e2e is the running service and its load.
type e2e struct {
	t       *testing.T
	dir     string
	addr    string
	pidFile string
	logFile string
	control string       // the control socket's path
	epoch   atomic.Int32 // upgrades done
	renew   atomic.Int32 // connections opened before this epoch are to close
	stop    atomic.Bool
	mu      sync.Mutex
	results [e2eWorkers][]result
	pids    map[int]bool
}

// TestHTTP3Upgrades: examples/http3 through five upgrades under HTTP/3
// load from quic-go clients, each worker on its own QUIC connection, a
// request every 5 ms with a 1 s budget, never retried: none fails; after
// each upgrade the connections opened before it are still answered by the
// old generation once the new one is ready (the pid in the body), new
// ones by the new one; the old generation exits as soon as its clients
// closed their connections, and, when one client keeps its connection,
// once GOAWAY made that client close it. Then the old generation is
// killed mid-drain: its clients' connections end at once with a stateless
// reset, sent by the new generation.
func TestHTTP3Upgrades(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs examples/http3")
	}
	e := startE2E(t)
	var wg sync.WaitGroup
	for w := range e2eWorkers {
		wg.Go(func() { e.work(w) })
	}
	defer func() { e.stop.Store(true); wg.Wait() }()
	time.Sleep(100 * time.Millisecond)

	var holder *http3.ClientConn
	for i := 1; i <= e2eUpgrades; i++ {
		if i == e2eUpgrades {
			holder = e.clientConn(e.dial()) // idle until GOAWAY closes it
		}
		old := e.pid()
		newPID, ready := e.upgrade(old)
		e.epoch.Store(int32(i))
		time.Sleep(e2eKeepOld)
		e.renew.Store(int32(i))
		exited := e.waitExit(old, 10*time.Second)
		if i < e2eUpgrades {
			assert.Less(t, exited.Sub(ready), e2eGoawayAfter-500*time.Millisecond,
				"upgrade %d: the old generation exits once its clients closed their connections, before GOAWAY", i)
		} else {
			assert.GreaterOrEqual(t, exited.Sub(ready), e2eGoawayAfter-200*time.Millisecond,
				"upgrade %d: an open connection keeps the old generation until GOAWAY", i)
			select {
			case <-holder.Context().Done():
			case <-time.After(time.Second):
				t.Errorf("the idle connection should be closed after GOAWAY")
			}
		}
		time.Sleep(100 * time.Millisecond) // answers on the new connections
		e.checkUpgrade(i, old, newPID, ready)
	}

	// Kill the old generation mid-drain: its clients get a stateless reset.
	old := e.pid()
	_, _ = e.upgrade(old)
	e.epoch.Store(e2eUpgrades + 1)
	time.Sleep(e2eKeepOld)
	killed := time.Now()
	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	e.waitExit(old, 5*time.Second)
	require.Eventually(t, func() bool { return e.failedSince(killed) == e2eWorkers }, 3*time.Second, 10*time.Millisecond,
		"every worker's old connection should fail after the kill")
	require.Eventually(t, func() bool { return e.servedOn(e2eUpgrades+1) == e2eWorkers }, 3*time.Second, 10*time.Millisecond,
		"every worker should be served on a new connection after the reset")
	e.stop.Store(true)
	wg.Wait()
	e.checkKill(killed)
	e.checkStatus()
	e.stopService()
	e.checkLogs()
}

// checkStatus: the serving generation's status (tcpgrace status, on the
// control socket) carries the counters of its endpoint: it forwarded its
// predecessor's packets and sent the resets for the killed one's.
func (e *e2e) checkStatus() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := control.Do(ctx, e.control, control.Request{Cmd: control.CmdStatus})
	require.NoError(e.t, err)
	require.True(e.t, rep.OK, rep.Error)
	c := rep.Status.Counters
	assert.Positive(e.t, c["quic_packets_forwarded_total"], "status counters: %v", c)
	assert.Positive(e.t, c["quic_forwarded_bytes_total"], "status counters: %v", c)
	assert.Positive(e.t, c["quic_stateless_resets_total"], "status counters: %v", c)
	assert.Contains(e.t, c, "quic_packets_received_total")
	assert.Contains(e.t, c, "quic_packets_dropped_total")
}

func startE2E(t *testing.T) *e2e {
	dir := t.TempDir()
	bin := filepath.Join(dir, "http3")
	build := exec.Command("go", "build", "-o", bin, "./http3")
	build.Dir = filepath.Join("..", "..", "examples")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building examples/http3: %s", out)
	cert, key := writeCert(t, dir)
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	addr := probe.LocalAddr().String()
	probe.Close()
	e := &e2e{t: t, dir: dir, addr: addr, pidFile: filepath.Join(dir, "pid"), logFile: filepath.Join(dir, "log"), pids: map[int]bool{}}
	logf, err := os.Create(e.logFile)
	require.NoError(t, err)
	defer logf.Close()
	e.control = filepath.Join(dir, "ctl")
	cmd := exec.Command(bin, "-addr", addr, "-cert", cert, "-key", key, "-pidfile", e.pidFile,
		"-control", e.control, "-drain-timeout", "10s", "-goaway-after", e2eGoawayAfter.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	go cmd.Wait()
	e.pids[cmd.Process.Pid] = true
	t.Cleanup(func() {
		for pid := range e.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(e.logFile)
			t.Logf("server logs:\n%s", b)
		}
	})
	require.Eventually(t, func() bool { return e.pid() == cmd.Process.Pid }, 10*time.Second, 10*time.Millisecond,
		"the first generation should write its pid file")
	return e
}

// pid is the pid in the pid file, 0 if none.
func (e *e2e) pid() int {
	b, _ := os.ReadFile(e.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// upgrade signals old and waits until the next generation is ready (its
// pid in the pid file).
func (e *e2e) upgrade(old int) (int, time.Time) {
	e.t.Helper()
	require.NoError(e.t, syscall.Kill(old, syscall.SIGUSR1))
	require.Eventually(e.t, func() bool { p := e.pid(); return p != 0 && p != old }, 10*time.Second, time.Millisecond,
		"the next generation should become ready")
	pid := e.pid()
	e.mu.Lock()
	e.pids[pid] = true
	e.mu.Unlock()
	return pid, time.Now()
}

// waitExit waits until pid is gone and returns when it was seen gone.
func (e *e2e) waitExit(pid int, within time.Duration) time.Time {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return syscall.Kill(pid, 0) != nil || isZombie(pid) }, within, 5*time.Millisecond,
		"generation %d should exit", pid)
	return time.Now()
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func (e *e2e) dial() *quic.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), e2eBudget)
	defer cancel()
	c, err := quic.DialAddr(ctx, e.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		return nil
	}
	return c
}

func (e *e2e) clientConn(c *quic.Conn) *http3.ClientConn {
	require.NotNil(e.t, c, "dialing the service")
	return (&http3.Transport{}).NewClientConn(c)
}

// work is one worker: a request every e2eInterval on its connection; it
// opens a new one when told (renew), and after a failed request.
func (e *e2e) work(w int) {
	var qc *quic.Conn
	var cc *http3.ClientConn
	epoch := 0
	defer func() {
		if qc != nil {
			qc.CloseWithError(0, "")
		}
	}()
	for !e.stop.Load() {
		if qc == nil || int(e.renew.Load()) > epoch {
			if qc != nil {
				qc.CloseWithError(0, "")
			}
			epoch = int(e.epoch.Load())
			if qc = e.dial(); qc == nil {
				e.record(w, result{epoch: epoch, at: time.Now(), err: errors.New("dial failed")})
				time.Sleep(e2eInterval)
				continue
			}
			cc = (&http3.Transport{}).NewClientConn(qc)
		}
		r := e.get(cc)
		r.epoch = epoch
		e.record(w, r)
		if r.err != nil {
			qc.CloseWithError(0, "")
			qc = nil
		}
		time.Sleep(e2eInterval)
	}
}

// get is one GET / within the budget: the pid that answered.
func (e *e2e) get(cc *http3.ClientConn) result {
	ctx, cancel := context.WithTimeout(context.Background(), e2eBudget)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+e.addr+"/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return result{at: time.Now(), err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return result{at: time.Now(), pid: pid, err: err}
}

func (e *e2e) record(w int, r result) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results[w] = append(e.results[w], r)
}

// checkUpgrade: upgrade i from old to next, ready at ready, failed no
// request; each worker's connection of before it was answered by old
// after ready, and its next one only by next.
func (e *e2e) checkUpgrade(i, old, next int, ready time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for w, rs := range e.results {
		var oldAfter, fresh int
		for _, r := range rs {
			if r.err != nil {
				e.t.Errorf("worker %d: a request failed: %v", w, r.err)
				continue
			}
			switch {
			case r.epoch == i-1 && r.at.After(ready):
				assert.Equal(e.t, old, r.pid, "upgrade %d, worker %d: a connection of before is answered by the old generation", i, w)
				oldAfter++
			case r.epoch == i:
				assert.Equal(e.t, next, r.pid, "upgrade %d, worker %d: a new connection is answered by the new generation", i, w)
				fresh++
			}
		}
		assert.Positive(e.t, oldAfter, "upgrade %d, worker %d: answers on the old connection after the new generation was ready", i, w)
		assert.Positive(e.t, fresh, "upgrade %d, worker %d: answers on a new connection", i, w)
		e.results[w] = rs[:0] // counted
	}
}

// failedSince counts the workers with a failed request after t.
func (e *e2e) failedSince(t time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, rs := range e.results {
		for _, r := range rs {
			if r.err != nil && r.at.After(t) {
				n++
				break
			}
		}
	}
	return n
}

// servedOn counts the workers with an answer on a connection opened at
// epoch.
func (e *e2e) servedOn(epoch int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, rs := range e.results {
		for _, r := range rs {
			if r.err == nil && r.epoch == epoch {
				n++
				break
			}
		}
	}
	return n
}

// checkKill: the only failures are on the killed generation's
// connections after the kill, each a stateless reset, within the budget;
// the workers' next connections were served.
func (e *e2e) checkKill(killed time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for w, rs := range e.results {
		var resets, after int
		for _, r := range rs {
			if r.err == nil {
				if r.epoch == e2eUpgrades+1 {
					after++
				}
				continue
			}
			if !r.at.After(killed) || r.epoch != e2eUpgrades {
				e.t.Errorf("worker %d: a request failed, not on the killed generation's connection: %v", w, r.err)
				continue
			}
			var reset *quic.StatelessResetError
			if assert.ErrorAs(e.t, r.err, &reset, "worker %d: the killed generation's connection ends with a stateless reset", w) {
				resets++
				assert.Less(e.t, r.at.Sub(killed), e2eBudget, "worker %d: the reset comes at once, not at a timeout", w)
			}
		}
		assert.Equal(e.t, 1, resets, "worker %d: one reset, then a new connection", w)
		assert.Positive(e.t, after, "worker %d: served on a new connection after the kill", w)
	}
}

// stopService stops the serving generation with SIGTERM.
func (e *e2e) stopService() {
	pid := e.pid()
	require.NoError(e.t, syscall.Kill(pid, syscall.SIGTERM))
	e.waitExit(pid, 15*time.Second)
}

var logStats = regexp.MustCompile(`msg="quic drained" pid=(\d+) forwarded=(\d+) forwarded_bytes=\d+ received=(\d+) orphaned=(\d+) resets_sent=(\d+) dropped=(\d+)`)

// checkLogs: every generation but the killed one logged its counters; the
// ones that took over forwarded, and the last one sent the resets.
func (e *e2e) checkLogs() {
	b, err := os.ReadFile(e.logFile)
	require.NoError(e.t, err)
	m := logStats.FindAllStringSubmatch(string(b), -1)
	require.Len(e.t, m, e2eUpgrades+1, "each generation but the killed one logs its counters at the end of its drain")
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	for i, l := range m[:e2eUpgrades] {
		if i > 0 {
			assert.Positive(e.t, num(l[2]), "generation %d forwarded its predecessor's packets", i+1)
		}
		assert.Positive(e.t, num(l[3]), "generation %d received forwarded packets", i+1)
	}
	last := m[e2eUpgrades]
	assert.Positive(e.t, num(last[2]), "the last generation forwarded")
	assert.Positive(e.t, num(last[5]), "the last generation sent stateless resets for the killed one's connections")
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (cert, key string) {
	cfg := serverTLS(t)
	c := cfg.Certificates[0]
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	require.NoError(t, err)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
	return cert, key
}
