//go:build linux

package tcpgrace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exitReadyTimeout is the ready timeout for children that exit before
// ready: long enough that a slow start is no timeout. A child's exit is
// reported at once (TestChildExitWithoutWordIsReportedAtOnce), so it does
// not lengthen these cases.
const exitReadyTimeout = 2 * time.Second

// harness is a parent generation in the test process: a cold Upgrader
// with a TCP, a Unix and a UDP socket, Ready, whose next generation is
// whatever the test puts at exe.
type harness struct {
	t       *testing.T
	dir     string // t.TempDir(): exe, the sockets, the pid file, the child's info
	exe     string // Options.Executable
	ctlPath string // the Unix socket's path
	pidFile string // Options.PIDFile, shared with the child
	rec     *childRecorder
	u       *Upgrader
	web     net.Listener
	ctl     net.Listener
	dns     net.PacketConn
}

// newHarness makes the harness; each of more may change its Options.
func newHarness(t *testing.T, readyTimeout time.Duration, more ...func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, exe: filepath.Join(dir, "next"), ctlPath: filepath.Join(dir, "c.sock"),
		pidFile: filepath.Join(dir, "app.pid"), rec: newChildRecorder()}
	t.Setenv(envChildMode, childServe)
	t.Setenv(envChildDir, dir)
	t.Setenv(envChildUnix, h.ctlPath)
	t.Setenv(envChildPIDFile, h.pidFile)
	// A race-enabled child would sleep a second at exit, waiting for
	// reports; the child's own races still fail it.
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	h.useChild(childServe)
	opts := Options{
		Executable:   h.exe,
		Args:         []string{"tcpgrace-next", "-test.run=^$"},
		ReadyTimeout: readyTimeout,
		PIDFile:      h.pidFile,
		Logger:       slog.New(h.rec),
	}
	for _, f := range more {
		f(&opts)
	}
	h.u = newColdUpgrader(t, opts)
	var err error
	h.web, err = h.u.Listen(nameWeb, "tcp4", loopback)
	require.NoError(t, err, "the parent should listen on tcp")
	h.ctl, err = h.u.Listen(nameCtl, "unix", h.ctlPath)
	require.NoError(t, err, "the parent should listen on unix")
	h.dns, err = h.u.ListenPacket(nameDNS, "udp4", loopback)
	require.NoError(t, err, "the parent should listen on udp")
	require.NoError(t, h.u.Ready(), "Ready without a parent should just write the pid file")
	h.assertPIDFile(os.Getpid(), "after the parent's Ready")
	return h
}

// testBinary is the path of the running test binary, which plays the
// next generation.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err, "the test binary's path should be known")
	return exe
}

// replaceExe removes whatever is at h.exe and lets create put the next
// thing there.
func (h *harness) replaceExe(create func(path string) error) {
	h.t.Helper()
	err := os.Remove(h.exe)
	if err != nil && !os.IsNotExist(err) {
		require.NoError(h.t, err)
	}
	require.NoError(h.t, create(h.exe), "preparing the next executable should succeed")
}

// useChild makes the next generation the test binary playing mode. A
// symlink, never a copy: a copy being written while another goroutine
// forks could fail with ETXTBSY.
func (h *harness) useChild(mode string) {
	h.t.Helper()
	h.replaceExe(func(path string) error { return os.Symlink(testBinary(h.t), path) })
	require.NoError(h.t, os.Setenv(envChildMode, mode)) // restored by newHarness's t.Setenv
}

func (h *harness) useMissing() {
	h.t.Helper()
	h.replaceExe(func(string) error { return nil })
}

// useNotExecutable puts a copy of the test binary without execute
// permission at exe; a small file when full is false.
func (h *harness) useNotExecutable(full bool) {
	h.t.Helper()
	h.replaceExe(func(path string) error {
		if !full {
			return os.WriteFile(path, []byte("\x7fELF not really\n"), 0o644)
		}
		src, err := os.Open(testBinary(h.t))
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			return err
		}
		return dst.Close()
	})
}

// useGarbage puts an executable file that is no program at exe.
func (h *harness) useGarbage() {
	h.t.Helper()
	h.replaceExe(func(path string) error {
		return os.WriteFile(path, []byte("\x00\x01\x02 this is not a program\n\xff\xfe"), 0o755)
	})
}

// startedChild returns the pid of the child the last Upgrade started, and
// makes sure it does not outlive the test.
func (h *harness) startedChild() int {
	h.t.Helper()
	pid := h.rec.next(h.t)
	h.t.Cleanup(func() {
		if processExists(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(h.t, pid)
		}
	})
	return pid
}

// assertNoChildStarted checks that the last Upgrade started no process.
func (h *harness) assertNoChildStarted(msg string) {
	h.t.Helper()
	select {
	case pid := <-h.rec.children:
		assert.Failf(h.t, "no child should have been started", "%s: child %d was started", msg, pid)
	default:
	}
}

// waitGone waits until pid has exited and been reaped (a zombie still
// has its /proc entry).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool { return !processExists(pid) }, 10*time.Second, 5*time.Millisecond,
		"process %d should have exited and been reaped", pid)
}

func (h *harness) assertPIDFile(pid int, when string) {
	h.t.Helper()
	b, err := os.ReadFile(h.pidFile)
	if assert.NoError(h.t, err, "the pid file should exist %s", when) {
		assert.Equal(h.t, strconv.Itoa(pid)+"\n", string(b), "the pid file should hold pid %d %s", pid, when)
	}
}

// assertParentServes checks that the parent still holds and serves all
// three sockets, and is still the generation in charge.
func (h *harness) assertParentServes(msg string) {
	h.t.Helper()
	assertAccepts(h.t, h.web, msg+": parent tcp")
	assertAccepts(h.t, h.ctl, msg+": parent unix")
	assertPacketRoundTrip(h.t, h.dns, msg+": parent udp")
	select {
	case <-h.u.Exit():
		assert.Fail(h.t, "Exit should stay open while the parent serves", msg)
	default:
	}
	h.assertPIDFile(os.Getpid(), msg)
}

// readChildInfo reads (and removes) what the last serving child wrote.
func (h *harness) readChildInfo() childInfo {
	h.t.Helper()
	path := filepath.Join(h.dir, childInfoFile)
	b, err := os.ReadFile(path)
	require.NoError(h.t, err, "a ready child should have written %s", childInfoFile)
	require.NoError(h.t, os.Remove(path))
	var info childInfo
	require.NoError(h.t, json.Unmarshal(b, &info))
	return info
}

// assertChildServes checks that child pid answers on the parent's three
// addresses.
func (h *harness) assertChildServes(pid int, msg string) {
	h.t.Helper()
	want := childReply(pid)
	for _, a := range []net.Addr{h.web.Addr(), h.ctl.Addr()} {
		c, err := net.DialTimeout(a.Network(), a.String(), ioTimeout)
		if !assert.NoError(h.t, err, "%s: dialing %s %s should succeed", msg, a.Network(), a) {
			continue
		}
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		assert.NoError(h.t, err, "%s: %s %s should answer", msg, a.Network(), a)
		assert.Equal(h.t, want, line, "%s: the child should serve %s %s", msg, a.Network(), a)
	}
	c, err := net.Dial("udp4", h.dns.LocalAddr().String())
	require.NoError(h.t, err)
	defer c.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(h.t, err)
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	assert.NoError(h.t, err, "%s: the child should answer on udp", msg)
	assert.Equal(h.t, want, string(buf[:n]), "%s: the child should serve udp %s", msg, h.dns.LocalAddr())
}

// stopChild sends SIGTERM to the serving child pid and waits until the
// parent's Upgrader has reaped it.
func (h *harness) stopChild(pid int) {
	h.t.Helper()
	require.NoError(h.t, syscall.Kill(pid, syscall.SIGTERM), "signalling child %d should succeed", pid)
	waitGone(h.t, pid)
}

// upgradeToServingChild runs a successful Upgrade to a serving child and
// checks the hand-over; it returns the child's pid, still serving.
func (h *harness) upgradeToServingChild(msg string) int {
	h.t.Helper()
	h.useChild(childServe)
	require.NoError(h.t, h.u.Upgrade(context.Background()), "%s: the upgrade should succeed", msg)
	pid := h.startedChild()
	h.assertHandedOver(pid, msg)
	return pid
}

// assertHandedOver checks the state after a successful Upgrade to pid.
func (h *harness) assertHandedOver(pid int, msg string) {
	h.t.Helper()
	waitClosed(h.t, h.u.Exit(), msg+": Exit after a successful upgrade")
	info := h.readChildInfo()
	assert.Equal(h.t, pid, info.PID, "%s: the child that reported should be the one started", msg)
	assert.Equal(h.t, 2, info.Generation, "%s: the child should be generation 2", msg)
	assert.True(h.t, info.HasParent, "%s: the child should know its parent waits", msg)
	assert.Equal(h.t, h.web.Addr().String(), info.Web, "%s: the child should have inherited the tcp socket", msg)
	assert.Equal(h.t, h.ctlPath, info.Ctl, "%s: the child should have inherited the unix socket", msg)
	assert.Equal(h.t, h.dns.LocalAddr().String(), info.DNS, "%s: the child should have inherited the udp socket", msg)

	_, err := h.web.Accept()
	assert.ErrorIs(h.t, err, net.ErrClosed, "%s: the parent's tcp listener should be closed", msg)
	_, err = h.ctl.Accept()
	assert.ErrorIs(h.t, err, net.ErrClosed, "%s: the parent's unix listener should be closed", msg)
	_, _, err = h.dns.ReadFrom(make([]byte, 1))
	assert.True(h.t, errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed),
		"%s: the parent's udp conn should have stopped reading (it stays open for replies until the drain closes it): %v", msg, err)
	_, err = os.Lstat(h.ctlPath)
	assert.NoError(h.t, err, "%s: the unix socket file should stay for the child", msg)
	h.assertPIDFile(pid, msg+": after the child's Ready")
	h.assertChildServes(pid, msg)
}

func TestUpgradeHandsSocketsToNextGeneration(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	require.NoError(t, h.u.Upgrade(context.Background()), "the upgrade should succeed")
	pid := h.startedChild()
	assert.NotEqual(t, os.Getpid(), pid, "the child should be another process")
	h.assertHandedOver(pid, "after the upgrade")

	_, err := h.u.Listen("late", "tcp4", loopback)
	assert.ErrorIs(t, err, ErrUpgraded, "Listen after a successful upgrade should fail")
	assert.ErrorIs(t, h.u.Upgrade(context.Background()), ErrUpgraded, "a second Upgrade after a successful one should fail")
	// What a server's deferred Close does in the old generation.
	assert.NoError(t, h.web.Close(), "closing a listener the hand-off closed should return nil")
	assert.NoError(t, h.ctl.Close(), "closing a unix listener the hand-off closed should return nil")
	_, err = os.Lstat(h.ctlPath)
	assert.NoError(t, err, "closing the old generation's unix listener should leave the socket file to the child")

	// The old generation goes away; the child keeps everything.
	require.NoError(t, h.u.Shutdown(context.Background()), "the parent's Shutdown should succeed")
	_, err = os.Lstat(h.ctlPath)
	assert.NoError(t, err, "the parent's Shutdown should leave the unix socket file to the child")
	h.assertPIDFile(pid, "after the parent's Shutdown")
	h.assertChildServes(pid, "after the parent's Shutdown")

	h.stopChild(pid)
	_, err = os.Lstat(h.ctlPath)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the last generation's Shutdown should remove the unix socket file")
	_, err = os.Lstat(h.pidFile)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the last generation's Shutdown should remove its pid file")
}

// TestHandOffStopsListenersBeforeClosingThem: a successful Upgrade stops
// every listener at once, before their fds are closed. A waiting Accept
// fails with net.ErrClosed (not the deadline that woke it), a new
// deadline cannot make Accept wait again, and Shutdown returns only once
// the fds are closed.
//
// The closes are held back with the Upgrader's closing lock, which each
// close of a listener takes shared: the test takes it alone when the
// upgrade has stood, before the listeners stop.
func TestHandOffStopsListenersBeforeClosingThem(t *testing.T) {
	var h *harness
	var held atomic.Bool
	h = newHarness(t, 10*time.Second, func(o *Options) {
		o.OnEvent = func(e Event) {
			if e.Kind == EventUpgraded {
				h.u.closing.Lock()
				held.Store(true)
			}
		}
	})
	var opened sync.Once
	open := func() {
		opened.Do(func() {
			if held.Load() {
				h.u.closing.Unlock()
			}
		})
	}
	defer open()
	lns := []net.Listener{h.web, h.ctl}
	links := make([]string, len(lns))
	waiting := make(chan error, len(lns))
	for i, ln := range lns {
		links[i] = socketLink(t, ln)
		go func() {
			_, err := ln.Accept()
			waiting <- err
		}()
	}
	require.NoError(t, h.u.Upgrade(context.Background()), "the upgrade should succeed")
	pid := h.startedChild()
	for range lns {
		select {
		case err := <-waiting:
			assert.ErrorIs(t, err, net.ErrClosed, "a waiting Accept should fail as closed")
			assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "a waiting Accept should not see the deadline that woke it")
		case <-time.After(ioTimeout):
			t.Fatal("a waiting Accept should return once the hand-off stands, before the fds are closed")
		}
	}
	for i, ln := range lns {
		assert.Equal(t, 1, fdsShowing(t, links[i]), "%s %s: its fd should still be open (its close waits)", ln.Addr().Network(), ln.Addr())
		err := ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Time{})
		assert.ErrorIs(t, err, net.ErrClosed, "%s: a new deadline on a stopped listener should fail as closed", ln.Addr())
		assert.ErrorIs(t, acceptWithin(t, ln), net.ErrClosed, "%s: Accept after the new deadline should still fail as closed", ln.Addr())
	}

	shut := make(chan error, 1)
	go func() { shut <- h.u.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while the hand-off's listeners were still being closed", err)
	case <-time.After(100 * time.Millisecond):
	}
	open()
	select {
	case err := <-shut:
		require.NoError(t, err, "the parent's Shutdown should succeed")
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown should return once the listeners' fds are closed")
	}
	for i, ln := range lns {
		assert.Zero(t, fdsShowing(t, links[i]), "%s %s: its fd should be closed when Shutdown returns", ln.Addr().Network(), ln.Addr())
	}
	h.assertChildServes(pid, "after the parent's Shutdown")
	h.stopChild(pid)
}

// socketLink is what /proc/self/fd shows for ln's socket: socket:[inode].
func socketLink(t *testing.T, ln net.Listener) string {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	var st syscall.Stat_t
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }))
	require.NoError(t, serr, "fstat of %s's socket", ln.Addr())
	return "socket:[" + strconv.FormatUint(st.Ino, 10) + "]"
}

// fdsShowing counts this process's fds that /proc/self/fd shows as link.
func fdsShowing(t *testing.T, link string) int {
	t.Helper()
	n := 0
	for _, target := range openFDs(t) {
		if target == link {
			n++
		}
	}
	return n
}

// acceptWithin is ln.Accept's error, or a failure of the test if Accept
// waits longer than ioTimeout.
func acceptWithin(t *testing.T, ln net.Listener) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(ioTimeout):
		t.Fatalf("Accept on %s should not wait", ln.Addr())
		return nil
	}
}

func TestUpgradeRollback(t *testing.T) {
	for _, tc := range []struct {
		name         string
		readyTimeout time.Duration
		setup        func(*harness)
		started      bool     // a child process was started
		want         []error  // what the error must wrap
		wantText     []string // what the error must say
	}{
		{"executable missing", 0, (*harness).useMissing, false,
			[]error{ErrChildFailed, fs.ErrNotExist}, nil},
		{"executable not executable", 0, func(h *harness) { h.useNotExecutable(true) }, false,
			[]error{ErrChildFailed, syscall.EACCES}, nil},
		{"executable not a valid binary", 0, (*harness).useGarbage, false,
			[]error{ErrChildFailed, syscall.ENOEXEC}, nil},
		{"child exits before ready", exitReadyTimeout, func(h *harness) { h.useChild(childExit3) }, true,
			[]error{ErrChildFailed}, []string{"exit status 3"}},
		{"child fails", 0, func(h *harness) { h.useChild(childFail) }, true,
			[]error{ErrChildFailed}, []string{childFailReason}},
		{"child never ready", 300 * time.Millisecond, func(h *harness) { h.useChild(childHang) }, true,
			[]error{ErrReadyTimeout}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := tc.readyTimeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			h := newHarness(t, timeout)
			tc.setup(h)
			start := time.Now()
			err := h.u.Upgrade(context.Background())
			elapsed := time.Since(start)
			require.Error(t, err, "the upgrade should fail")
			for _, want := range tc.want {
				assert.ErrorIs(t, err, want, "the upgrade error should wrap %v", want)
			}
			for _, text := range tc.wantText {
				assert.Contains(t, err.Error(), text, "the upgrade error should say %q", text)
			}
			if tc.started {
				pid := h.startedChild()
				assert.False(t, processExists(pid), "child %d should be killed and reaped when Upgrade returns", pid)
			} else {
				assert.Contains(t, err.Error(), h.exe, "a start error should name the executable")
				h.assertNoChildStarted(tc.name)
			}
			if errors.Is(err, ErrReadyTimeout) {
				assert.GreaterOrEqual(t, elapsed, tc.readyTimeout, "Upgrade should wait the whole ready timeout")
			}
			h.assertParentServes("after the failed upgrade")

			// The failure fixed, the same Upgrader upgrades.
			h.u.opts.ReadyTimeout = 10 * time.Second // no Upgrade runs: no race
			pid := h.upgradeToServingChild("the retry")
			h.stopChild(pid)
		})
	}
}

// gate is where a childGate child reports and waits for the test's word.
type gate struct {
	ln *net.UnixListener
}

func newGate(t *testing.T, h *harness) *gate {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(h.dir, childGateSock), Net: "unix"})
	require.NoError(t, err, "the gate should listen")
	t.Cleanup(func() { ln.Close() })
	return &gate{ln: ln}
}

// arrive waits for the child to report at the gate: it is running and
// not ready, so its parent waits in Upgrade. It returns the child's pid
// and the connection to answer on.
func (g *gate) arrive(t *testing.T) (int, net.Conn) {
	t.Helper()
	require.NoError(t, g.ln.SetDeadline(time.Now().Add(10*time.Second)))
	c, err := g.ln.Accept()
	require.NoError(t, err, "the gate child should report at the gate")
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "the gate child should send its pid")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err, "the gate child should send a pid, not %q", line)
	return pid, c
}

// upgradeAsync runs Upgrade(ctx) in a goroutine.
func (h *harness) upgradeAsync(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.u.Upgrade(ctx) }()
	return done
}

// TestRollbackKeepsParentUnixSocketFile is the end-to-end form of
// TestFailedChildKeepsParentUnixSocketFile: a real next generation that
// closes its Upgrader on its way out after a failed start.
func TestRollbackKeepsParentUnixSocketFile(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	h.useChild(childExit3Close)
	err := h.u.Upgrade(context.Background())
	assert.ErrorIs(t, err, ErrChildFailed, "the child should exit before ready")
	h.startedChild()
	_, err = os.Lstat(h.ctlPath)
	assert.NoError(t, err, "the parent's unix socket file should survive the failed child")
	h.assertParentServes("after the child closed its Upgrader and exited")
}

func TestUpgradeCancelled(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	g := newGate(t, h)
	h.useChild(childGate)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	upgrade := h.upgradeAsync(ctx)
	pid, _ := g.arrive(t)
	assert.Equal(t, pid, h.startedChild(), "the child at the gate should be the one Upgrade started")

	cancel()
	err := waitErr(t, upgrade, "Upgrade after its ctx was cancelled")
	assert.ErrorIs(t, err, context.Canceled, "a cancelled upgrade should return ctx's error")
	assert.False(t, processExists(pid), "child %d should be killed and reaped when Upgrade returns", pid)
	h.assertParentServes("after the cancelled upgrade")

	pid = h.upgradeToServingChild("the retry")
	h.stopChild(pid)
}

func TestUpgradeWhileUpgrading(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	g := newGate(t, h)
	h.useChild(childGate)
	upgrade := h.upgradeAsync(context.Background())
	pid, conn := g.arrive(t)
	assert.Equal(t, pid, h.startedChild(), "the child at the gate should be the one Upgrade started")

	start := time.Now()
	err := h.u.Upgrade(context.Background())
	assert.ErrorIs(t, err, ErrUpgradeInProgress, "a second Upgrade while one runs should fail")
	assert.Less(t, time.Since(start), time.Second, "the second Upgrade should fail at once, not wait")
	_, err = h.u.Listen("late", "tcp4", loopback)
	assert.ErrorIs(t, err, ErrUpgradeInProgress, "Listen during an upgrade should fail")
	h.assertNoChildStarted("the second Upgrade")

	_, err = conn.Write([]byte{'R'})
	require.NoError(t, err, "telling the gate child to go on should succeed")
	require.NoError(t, waitErr(t, upgrade, "the first Upgrade"), "the first upgrade should succeed")
	h.assertHandedOver(pid, "after the slow child became ready")
	h.stopChild(pid)
}

func TestShutdownCancelsUpgrade(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	g := newGate(t, h)
	h.useChild(childGate)
	upgrade := h.upgradeAsync(context.Background())
	pid, _ := g.arrive(t)
	assert.Equal(t, pid, h.startedChild(), "the child at the gate should be the one Upgrade started")

	shutdown := make(chan error, 1)
	go func() { shutdown <- h.u.Shutdown(context.Background()) }()
	assert.NoError(t, waitErr(t, shutdown, "Shutdown during an upgrade"), "Shutdown should cancel the upgrade and return")
	assert.False(t, processExists(pid), "Shutdown should return only after child %d is killed and reaped", pid)
	err := waitErr(t, upgrade, "the cancelled Upgrade")
	assert.ErrorIs(t, err, context.Canceled, "the upgrade cancelled by Shutdown should say so")
	waitClosed(t, h.u.Exit(), "Exit after Shutdown")
	assert.ErrorIs(t, h.u.Upgrade(context.Background()), ErrClosed, "Upgrade after Shutdown should fail")
	_, err = h.web.Accept()
	assert.ErrorIs(t, err, net.ErrClosed, "Shutdown should close the listener")
	_, err = os.Lstat(h.ctlPath)
	assert.ErrorIs(t, err, fs.ErrNotExist, "Shutdown without a hand-off should remove the unix socket file")
	_, err = os.Lstat(h.pidFile)
	assert.ErrorIs(t, err, fs.ErrNotExist, "Shutdown should remove our pid file")
}
