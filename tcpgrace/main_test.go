//go:build linux

package tcpgrace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// The integration tests start the test binary itself as the next
// generation, as Go's os/exec tests do. Upgrade passes the parent's
// environment on, so a test selects what the child does by setting these
// variables in its own environment (t.Setenv); TestMain of the child sees
// envChildMode and plays the child instead of running tests.
const (
	envChildMode    = "TCPGRACE_TEST_CHILD"         // one of the child* modes below
	envChildDir     = "TCPGRACE_TEST_CHILD_DIR"     // where the child writes childInfoFile and finds childGateSock
	envChildUnix    = "TCPGRACE_TEST_CHILD_UNIX"    // the path of the nameCtl Unix socket
	envChildPIDFile = "TCPGRACE_TEST_CHILD_PIDFILE" // the child's Options.PIDFile
)

// Child modes. Every mode first calls New and registers nameWeb, nameCtl
// and nameDNS with the addresses the parent used.
const (
	childServe = "serve" // write childInfoFile, Ready, serve until SIGTERM
	childGate  = "gate"  // report its pid on childGateSock, then like serve if the test answers 'R'; hang otherwise
	childExit3 = "exit3" // exit with status 3 without a word to the parent
	childFail  = "fail"  // Fail(errors.New(childFailReason)), then exit 1 at once
	childHang  = "hang"  // never ready: the parent's ready timeout kills it
	// childExit3Close is exit3 the way a main that returns an exit code
	// does it: its deferred Close runs first.
	childExit3Close = "exit3-close"
	// childHTTP is serve with nameWeb under RunHTTP (each answer is
	// childReply), and it writes what it inherits (Inherited) to
	// childStateFile.
	childHTTP = "http"
	// childHTTPLate is ready, but no server ever serves nameWeb: a
	// connection handed over waits for one (claimWait), then is refused.
	childHTTPLate = "http-late"
	// childHTTPMute is http, as a build that does not speak the hand-off
	// channel: it holds its end open and never says hello.
	childHTTPMute = "http-mute"
)

const (
	childInfoFile   = "info.json"
	childStateFile  = "state"
	childGateSock   = "g.sock"
	childFailReason = "config broken: xyz"
	// childLifetime bounds how long a child lives if nobody stops it, so
	// that a failed test never leaves a process behind for long.
	childLifetime = 2 * time.Minute
)

// The names and addresses that the parent registers and the child asks
// for again. nameCtl holds the characters the wire format must escape.
const (
	nameWeb  = "web"
	nameCtl  = "ctl;admin,1 é"
	nameDNS  = "dns"
	loopback = "127.0.0.1:0"
)

// childInfo is what a serving child reports about itself.
type childInfo struct {
	PID        int
	Generation int
	HasParent  bool
	Web        string // the concrete addresses of its sockets
	Ctl        string
	DNS        string
	Totals     Totals // the totals it inherited, before its Ready
}

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(envChildMode); ok {
		os.Exit(runTestChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// runTestChild is the next generation that the integration tests start.
// It uses New, the real process-global path.
func runTestChild(mode string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM) // first: a SIGTERM before Notify would kill us
	u, err := New(Options{PIDFile: os.Getenv(envChildPIDFile)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test child: New:", err)
		return 2
	}
	if mode == childHTTPMute {
		mute = u.in // held, never read: its fd stays open
		u.in = nil
		mode = childHTTP
	}
	web, err1 := u.Listen(nameWeb, "tcp4", loopback)
	ctl, err2 := u.Listen(nameCtl, "unix", os.Getenv(envChildUnix))
	dns, err3 := u.ListenPacket(nameDNS, "udp4", loopback)
	if err := errors.Join(err1, err2, err3); err != nil {
		fmt.Fprintln(os.Stderr, "test child: listen:", err)
		u.Fail(err)
		return 2
	}
	switch mode {
	case childExit3:
		os.Exit(3)
	case childExit3Close:
		u.Close()
		return 3
	case childFail:
		u.Fail(errors.New(childFailReason))
		os.Exit(1)
	case childHang:
		time.Sleep(childLifetime)
		return 4
	case childGate:
		if !waitForGate() {
			time.Sleep(childLifetime) // the parent gave up on us: wait to be killed
			return 4
		}
	}
	info := childInfo{PID: os.Getpid(), Generation: u.Generation(), HasParent: u.inh.HasParent(),
		Web: web.Addr().String(), Ctl: ctl.Addr().String(), DNS: dns.LocalAddr().String(), Totals: u.Status().Totals}
	if err := writeChildInfo(info); err != nil {
		u.Fail(err)
		return 2
	}
	if err := u.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "test child: Ready:", err)
		return 2
	}
	if mode == childHTTP || mode == childHTTPLate {
		return httpTestChild(u, mode, web, ctl, dns, sigs)
	}
	serveTestChild(dns, web, ctl)
	select {
	case <-sigs:
	case <-time.After(childLifetime):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "test child: Shutdown:", err)
		return 2
	}
	return 0
}

// childHeaderTimeout is the ReadHeaderTimeout of a childHTTP's server:
// a connection handed over to it may stay idle longer.
const childHeaderTimeout = 300 * time.Millisecond

// mute keeps the channel end of a childHTTPMute alive.
var mute *inChannel

// childReply is what a serving child answers on every socket.
func childReply(pid int) string { return fmt.Sprintf("child %d\n", pid) }

// httpTestChild serves web under RunHTTP until SIGTERM (childHTTP), and
// writes its inheritance to childStateFile, or never serves it
// (childHTTPLate).
func httpTestChild(u *Upgrader, mode string, web, ctl net.Listener, dns net.PacketConn, sigs chan os.Signal) int {
	serveTestChild(dns, ctl)
	if mode == childHTTPLate {
		time.Sleep(childLifetime)
		return 4
	}
	go func() {
		b, err := u.Inherited(context.Background())
		if err == nil {
			os.WriteFile(filepath.Join(os.Getenv(envChildDir), childStateFile), b, 0o644)
		}
	}()
	reply := childReply(os.Getpid())
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, reply) }),
		ReadHeaderTimeout: childHeaderTimeout}
	srv := &Server{Upgrader: u, Signals: sigs, DrainTimeout: 5 * time.Second}
	if err := srv.RunHTTP(context.Background(), hs, web); err != nil {
		fmt.Fprintln(os.Stderr, "test child: RunHTTP:", err)
		return 2
	}
	return 0
}

// serveTestChild answers every connection and datagram with childReply.
func serveTestChild(dns net.PacketConn, lns ...net.Listener) {
	reply := childReply(os.Getpid())
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, reply)
				c.Close()
			}
		}()
	}
	go func() {
		buf := make([]byte, 512)
		for {
			_, addr, err := dns.ReadFrom(buf)
			if err != nil {
				return
			}
			dns.WriteTo([]byte(reply), addr)
		}
	}()
}

// waitForGate tells the test our pid on childGateSock and waits for its
// word: true if it says 'R'.
func waitForGate() bool {
	c, err := net.DialTimeout("unix", filepath.Join(os.Getenv(envChildDir), childGateSock), 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%d\n", os.Getpid()); err != nil {
		return false
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err == nil && b[0] == 'R'
}

func writeChildInfo(info childInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	path := filepath.Join(os.Getenv(envChildDir), childInfoFile)
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// newColdUpgrader returns an Upgrader as on a first start, without
// consuming New's once-per-process inherited environment. It is closed
// when the test ends.
func newColdUpgrader(t testing.TB, opts Options) *Upgrader {
	t.Helper()
	files, err := wire.Open(nil)
	require.NoError(t, err, "wire.Open(nil) must give an empty set, as on a first start")
	u, err := newUpgrader(opts, files)
	require.NoError(t, err, "newUpgrader with a cold start must succeed")
	t.Cleanup(func() { u.Close() })
	return u
}

// childRecorder is a slog.Handler that picks the pids of started children
// out of the Upgrader's log records (attribute "child").
type childRecorder struct {
	mu       sync.Mutex
	seen     map[int]bool
	children chan int
}

func newChildRecorder() *childRecorder {
	return &childRecorder{seen: map[int]bool{}, children: make(chan int, 256)}
}

func (r *childRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *childRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *childRecorder) WithGroup(string) slog.Handler            { return r }

func (r *childRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key != "child" || a.Value.Kind() != slog.KindInt64 {
			return true
		}
		pid := int(a.Value.Int64())
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.seen[pid] {
			r.seen[pid] = true
			select {
			case r.children <- pid:
			default:
			}
		}
		return false
	})
	return nil
}

// next returns the pid of the next child the Upgrader started.
func (r *childRecorder) next(t *testing.T) int {
	t.Helper()
	select {
	case pid := <-r.children:
		return pid
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the Upgrader should have logged the pid of the child it started")
		return 0
	}
}

// processExists reports whether /proc/<pid> exists: a zombie still does.
func processExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
