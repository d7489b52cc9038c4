package bench

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkHandoffVsTableflip times hand-offs of the same line server
// built on tcpgrace and on cloudflare/tableflip (tgServer, tfServer),
// with 1 and 256 listeners. Each sub-benchmark starts both servers, hands
// each off once untimed, then per iteration hands off both, one after the
// other, the order alternating, so that both see the same machine; after
// each hand-off it waits, untimed, until the old process has exited,
// checks that the new one echoes and lets the machine settle
// (handoffSettle). Both sub-benchmarks run both servers; each reports its
// own library and the other's median signal to ready (tableflip-ns/op,
// tcpgrace-ns/op), and lib=tcpgrace also the ratio of its median to
// tableflip's in the same run: runs minutes apart differ more than the
// libraries do, so compare within a line.
//
// ns/op is the median, over the iterations, of the time from SIGUSR1
// until Ready returned in the next process (it wrote the pid file and
// told its parent). The other metrics are medians of the phases, from
// the stamps each process writes (see stamp):
//
//	signal-to-request  SIGUSR1 sent until the old process's loop got it
//	fork               SIGUSR1 sent until the next process was started,
//	                   fork and exec returned (tcpgrace's EventUpgradeStarted)
//	exec-to-main       from there until the role's first line in the child
//	signal-to-main     the two together: tableflip has no event for the fork
//	main-to-new        the role's signal set-up until New is called
//	new-to-ready       New, Listen for each listener, Ready
//	ready-to-noticed   Ready returned until the old process heard it (it
//	                   may hear it before Ready returns: then < 0)
//	signal-to-noticed  SIGUSR1 sent until the old process heard it
//
// Both servers are this test binary, so exec-to-main, the runtime's and
// the packages' start, is the same program's for both: what each
// library's imports add to a program's start (tcpgrace's bring net/http
// and crypto/tls in) does not show here.
func BenchmarkHandoffVsTableflip(b *testing.B) {
	for _, n := range []int{1, 256} {
		for _, lib := range []string{"tcpgrace", "tableflip"} {
			b.Run(fmt.Sprintf("listeners=%d/lib=%s", n, lib), func(b *testing.B) {
				tg, tf := startHandoffPair(b, n)
				var tgs, tfs []handoffSample
				var forkExecs []float64
				first, second := tg, tf
				for b.Loop() {
					forkExecs = append(forkExecs, forkExecOnce(b, n))
					for _, s := range []*handoffServer{first, second} {
						h := s.handOff(b)
						if s == tg {
							tgs = append(tgs, h)
						} else {
							tfs = append(tfs, h)
						}
						time.Sleep(handoffSettle)
					}
					first, second = second, first
				}
				if lib == "tcpgrace" {
					reportHandoff(b, tgs, tfs)
					b.ReportMetric(median(tgs, handoffSample.total)/median(tfs, handoffSample.total), "ratio-to-tableflip")
					slices.Sort(forkExecs)
					fe := forkExecs[len(forkExecs)/2]
					b.ReportMetric(fe, "forkexec-ns/op")
					// The old process's own work: from its loop's request
					// until the next process started, less what starting
					// a process costs at all.
					b.ReportMetric(median(tgs, func(h handoffSample) float64 { return float64(h.started - h.request) })-fe, "lib-old-ns/op")
				} else {
					reportHandoff(b, tfs, tgs)
				}
			})
		}
	}
}

// forkExecOnce starts this binary with n extra fds as the servers'
// next process gets them, in a mode that exits at once, and returns the
// nanoseconds until fork and exec returned (the exec succeeded); it reaps
// the process untimed. It is what starting a process costs the old
// generation without any library: the part of the fork phase that is no
// library's.
func forkExecOnce(tb testing.TB, n int) float64 {
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	files := []uintptr{0, 1, 2}
	for range n + 1 { // the sockets and a readiness pipe
		files = append(files, 2)
	}
	env := append(os.Environ(), exitEnv+"=1")
	begin := time.Now()
	pid, err := syscall.ForkExec(self, []string{self}, &syscall.ProcAttr{Env: env, Files: files})
	took := time.Since(begin)
	if err != nil {
		tb.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		tb.Fatalf("fork and exec of %s: %v %v", self, err, ws)
	}
	return float64(took.Nanoseconds())
}

// TestHandoffVsTableflipWorks hands each server of
// BenchmarkHandoffVsTableflip off once, with two listeners, and checks
// that it echoes before and after and that every phase was stamped.
func TestHandoffVsTableflipWorks(t *testing.T) {
	tg, tf := startHandoffPair(t, 2)
	for _, s := range []*handoffServer{tg, tf} {
		s.echo(t, 1)
		old := s.serving
		h := s.handOff(t)
		if s.serving == old {
			t.Errorf("%s: pid %d still serves after the hand-off", s.lib, old)
		}
		s.echo(t, 1)
		for phase, d := range h.phases() {
			if d <= 0 && phase != "ready-to-noticed" {
				t.Errorf("%s: phase %s took %v, want > 0", s.lib, phase, d)
			}
		}
		if h.total() <= 0 || h.total() > float64(10*time.Second) {
			t.Errorf("%s: hand-off took %v", s.lib, time.Duration(h.total()))
		}
	}
}

// handoffSettle is the untimed pause after each hand-off of the
// benchmark, so that what the processes still do after it (the old one's
// exit, the new one's start-up leftovers: its first GC, goroutines
// starting) does not run into the next hand-off. Without it the medians
// of five runs spread over 17 to 25 ms, with it over 16 to 18 ms.
const handoffSettle = 20 * time.Millisecond

// handoffSample is one hand-off's stamps, Unix ns: sent by the
// benchmark, the others by the old and the next process.
type handoffSample struct {
	lib                                           string
	sent, request, started, main, new, ready, got int64
}

func (h handoffSample) total() float64 { return float64(h.ready - h.sent) }

// phases are h's durations in ns, by metric name; fork and exec-to-main
// only where the library says when the next process started.
func (h handoffSample) phases() map[string]int64 {
	p := map[string]int64{
		"signal-to-request": h.request - h.sent,
		"signal-to-main":    h.main - h.sent,
		"main-to-new":       h.new - h.main,
		"new-to-ready":      h.ready - h.new,
		"ready-to-noticed":  h.got - h.ready,
		"signal-to-noticed": h.got - h.sent,
	}
	if h.started != 0 {
		p["fork"] = h.started - h.sent
		p["exec-to-main"] = h.main - h.started
	}
	return p
}

// reportHandoff reports the medians of hs: ns/op signal to ready, and
// each phase as NAME-ns/op; and the median signal to ready of the other
// library's hand-offs in the same run, as LIB-ns/op.
func reportHandoff(b *testing.B, hs, other []handoffSample) {
	if len(hs) == 0 || len(other) == 0 {
		return
	}
	b.ReportMetric(median(hs, handoffSample.total), "ns/op")
	b.ReportMetric(median(other, handoffSample.total), other[0].lib+"-ns/op")
	for name := range hs[0].phases() {
		b.ReportMetric(median(hs, func(h handoffSample) float64 { return float64(h.phases()[name]) }), name+"-ns/op")
	}
}

// median is the median of f over hs.
func median(hs []handoffSample, f func(handoffSample) float64) float64 {
	vs := make([]float64, len(hs))
	for i, h := range hs {
		vs[i] = f(h)
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// handoffServer is one line server of BenchmarkHandoffVsTableflip: a
// chain of processes of this binary, the first started here, each next
// one by the serving one. This process adopts them (it is their child
// subreaper while the servers run), so it reaps every one.
type handoffServer struct {
	lib     string
	addr    string // the first listener's
	pidFile string
	stamps  string
	serving int                      // the serving process
	seen    map[int]map[string]int64 // stamps read so far: pid, phase, Unix ns
}

// startHandoffPair starts the tcpgrace and the tableflip server, each
// with n listeners on loopback, hands each off once (a first hand-off
// pages the binary in) and stops both when tb ends.
func startHandoffPair(tb testing.TB, n int) (tg, tf *handoffServer) {
	tb.Helper()
	adoptOrphans(tb)
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	addrs := loopbackAddrs(tb, 2*n)
	tg = startHandoffServer(tb, self, "tcpgrace", tgServerEnv, addrs[:n])
	tf = startHandoffServer(tb, self, "tableflip", tfServerEnv, addrs[n:])
	tg.handOff(tb)
	tf.handOff(tb)
	return tg, tf
}

// adoptOrphans makes this process the child subreaper of the processes
// it starts, until tb ends: a generation whose parent exited becomes our
// child, which we reap.
func adoptOrphans(tb testing.TB) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		tb.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	tb.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// loopbackAddrs returns n loopback addresses whose ports were free a
// moment ago, all different.
func loopbackAddrs(tb testing.TB, n int) []string {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// startHandoffServer starts the first process of lib's server (this
// binary with role set to the addresses) and waits until its pid file
// names it; it is stopped with SIGTERM and reaped when tb ends.
func startHandoffServer(tb testing.TB, self, lib, role string, addrs []string) *handoffServer {
	tb.Helper()
	dir := tb.TempDir()
	s := &handoffServer{lib: lib, addr: addrs[0], pidFile: filepath.Join(dir, "pid"),
		stamps: filepath.Join(dir, "stamps"), seen: map[int]map[string]int64{}}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), role+"="+strings.Join(addrs, ","), pidEnv+"="+s.pidFile, stampsEnv+"="+s.stamps)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.serving = cmd.Process.Pid
	cmd.Process.Release() // reaped by pid, as its next generations are
	tb.Cleanup(func() { s.stop(tb) })
	within(tb, 10*time.Second, lib+" server ready", func() bool { return s.readPID() == s.serving })
	return s
}

// stop ends the serving process with SIGTERM and reaps it.
func (s *handoffServer) stop(tb testing.TB) {
	syscall.Kill(s.serving, syscall.SIGTERM)
	if err := reap(s.serving, 10*time.Second); err != nil {
		tb.Errorf("%s server: %v", s.lib, err)
	}
}

// handOff sends SIGUSR1 to the serving process, reaps it (it exits once
// the next one is ready and its connections ended), checks that the next
// one echoes and returns the stamps of the hand-off.
func (s *handoffServer) handOff(tb testing.TB) handoffSample {
	tb.Helper()
	old := s.serving
	sent := time.Now().UnixNano()
	if err := syscall.Kill(old, syscall.SIGUSR1); err != nil {
		tb.Fatalf("%s server: %v", s.lib, err)
	}
	if err := reap(old, 10*time.Second); err != nil {
		tb.Fatalf("%s server: %v", s.lib, err)
	}
	next := s.readPID()
	if next == 0 || next == old {
		tb.Fatalf("%s server: the pid file names %d after the hand-off from %d", s.lib, next, old)
	}
	s.serving = next
	// The next process stamps ready just after Ready returned, which may
	// be after the old one left.
	within(tb, 10*time.Second, s.lib+" next process's ready stamp", func() bool {
		s.readStamps(tb)
		return s.seen[next][stampReady] != 0
	})
	o, c := s.seen[old], s.seen[next]
	h := handoffSample{lib: s.lib, sent: sent, request: o[stampRequest], started: o[stampStarted],
		main: c[stampMain], new: c[stampNew], ready: c[stampReady], got: o[stampNoticed]}
	if h.request == 0 || h.main == 0 || h.new == 0 || h.got == 0 || (s.lib == "tcpgrace" && h.started == 0) {
		tb.Fatalf("%s server: stamps missing in the hand-off from %d to %d: old %v, next %v", s.lib, old, next, o, c)
	}
	s.echo(tb, 1)
	return h
}

// echo checks that the server echoes lines on its first listener.
func (s *handoffServer) echo(tb testing.TB, lines int) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
	if err != nil {
		tb.Fatalf("%s server: %v", s.lib, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i := range lines {
		want := fmt.Sprintf("line %d to %d\n", i, s.serving)
		if _, err := c.Write([]byte(want)); err != nil {
			tb.Fatalf("%s server: %v", s.lib, err)
		}
		if got, err := r.ReadString('\n'); err != nil || got != want {
			tb.Fatalf("%s server: echoed %q, %v; want %q", s.lib, got, err, want)
		}
	}
}

// readPID is the pid in the pid file, 0 if none.
func (s *handoffServer) readPID() int {
	raw, _ := os.ReadFile(s.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return pid
}

// readStamps reads every stamp the server's processes wrote so far; a
// process's later stamp of a phase replaces its earlier one.
func (s *handoffServer) readStamps(tb testing.TB) {
	raw, err := os.ReadFile(s.stamps)
	if err != nil {
		tb.Fatalf("%s server: %v", s.lib, err)
	}
	for line := range strings.Lines(string(raw)) {
		var phase string
		var pid int
		var ns int64
		if !strings.HasSuffix(line, "\n") {
			break // still being written
		}
		if _, err := fmt.Sscan(line, &phase, &pid, &ns); err != nil {
			tb.Fatalf("%s server: stamp %q: %v", s.lib, line, err)
		}
		if s.seen[pid] == nil {
			s.seen[pid] = map[string]int64{}
		}
		s.seen[pid][phase] = ns
	}
}

// reap waits for pid, a child of this process (started here or adopted),
// to exit, at most d; past d it kills it. It fails unless pid exited 0
// within d.
func reap(pid int, d time.Duration) error {
	type result struct {
		ws  syscall.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		_, r.err = syscall.Wait4(pid, &r.ws, 0, nil)
		done <- r
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(d):
		syscall.Kill(pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("pid %d still ran after %v: killed", pid, d)
	}
	switch {
	case r.err != nil:
		return fmt.Errorf("waiting for pid %d: %w", pid, r.err)
	case !r.ws.Exited() || r.ws.ExitStatus() != 0:
		return fmt.Errorf("pid %d ended: %v", pid, r.ws)
	}
	return nil
}

// within polls cond every 100 µs until it holds, at most d.
func within(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("no %s within %v", what, d)
		}
	}
}
