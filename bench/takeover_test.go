package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The processes of BenchmarkTakeover: giverEnv makes the binary a first
// generation with n listeners and a control socket, which serves until a
// taker took over and then exits; takerEnv a process started on its own
// that takes them over (Options.Takeover) and reports how long it took.
const (
	giverEnv   = "TCPGRACE_BENCH_GIVER"   // the number of listeners
	takerEnv   = "TCPGRACE_BENCH_TAKER"   // the number of listeners
	controlEnv = "TCPGRACE_BENCH_CONTROL" // the control socket's path
	pidEnv     = "TCPGRACE_BENCH_PIDFILE" // the giver's pid file: it serves once it exists
	startEnv   = "TCPGRACE_BENCH_START"   // when the taker was started, Unix ns
)

// BenchmarkTakeover times a takeover by a process started on its own,
// with 1 and 256 listeners (and the control socket) handed over: ns/op is
// the taker's New (it asks the serving generation, receives and checks
// every socket) until its Ready returned (the old generation confirmed);
// start-to-ready-ns/op adds the taker's process start before New. Each
// iteration runs a fresh giver and taker, both this binary.
func BenchmarkTakeover(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 256} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			var took, fromStart int64
			for range b.N {
				t, s := takeoverOnce(b, self, n)
				took += t
				fromStart += s
			}
			b.ReportMetric(float64(took)/float64(b.N), "ns/op")
			b.ReportMetric(float64(fromStart)/float64(b.N), "start-to-ready-ns/op")
		})
	}
}

// takeoverOnce runs a giver with n listeners, then a taker, and returns
// what the taker measured.
func takeoverOnce(b *testing.B, self string, n int) (took, fromStart int64) {
	dir := b.TempDir()
	ctl, pid, result := filepath.Join(dir, "ctl"), filepath.Join(dir, "pid"), filepath.Join(dir, "result")
	env := []string{controlEnv + "=" + ctl, pidEnv + "=" + pid, resultEnv + "=" + result}
	giver := exec.Command(self)
	giver.Env = append(append(os.Environ(), env...), fmt.Sprintf("%s=%d", giverEnv, n))
	giver.Stderr = os.Stderr
	if err := giver.Start(); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(pid); err == nil {
			break
		}
		if time.Now().After(deadline) {
			giver.Process.Kill()
			b.Fatal("the giver did not become ready")
		}
	}
	taker := exec.Command(self)
	taker.Stderr = os.Stderr
	taker.Env = append(append(os.Environ(), env...), fmt.Sprintf("%s=%d", takerEnv, n))
	taker.Env = append(taker.Env, fmt.Sprintf("%s=%d", startEnv, time.Now().UnixNano()))
	if err := taker.Run(); err != nil {
		giver.Process.Kill()
		b.Fatalf("bench taker: %v", err)
	}
	if err := giver.Wait(); err != nil {
		b.Fatalf("bench giver: %v", err)
	}
	raw, err := os.ReadFile(result)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fmt.Sscan(string(raw), &took, &fromStart); err != nil {
		b.Fatalf("bench taker result %q: %v", raw, err)
	}
	return took, fromStart
}

// listenAll registers the listeners l0 ... l(n-1) on loopback.
func listenAll(u *tcpgrace.Upgrader, n int) error {
	for i := range n {
		if _, err := u.Listen(fmt.Sprintf("l%d", i), "tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	return nil
}

// giver is the serving generation of BenchmarkTakeover: it serves until
// a taker took over, then exits 0.
func giver(count string) int {
	n, _ := strconv.Atoi(count)
	u, err := tcpgrace.New(tcpgrace.Options{Control: os.Getenv(controlEnv), PIDFile: os.Getenv(pidEnv)})
	if err == nil {
		err = listenAll(u, n)
	}
	if err == nil {
		err = u.Ready()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench giver:", err)
		return 1
	}
	select {
	case <-u.Exit():
		time.Sleep(50 * time.Millisecond) // a drain's length: the takeover's reply goes out
	case <-time.After(time.Minute):
		fmt.Fprintln(os.Stderr, "bench giver: nobody took over")
		return 1
	}
	u.Close()
	return 0
}

// taker takes the giver's sockets over and writes how long New until
// Ready took, and how long since it was started.
func taker(count string) int {
	n, _ := strconv.Atoi(count)
	begin := time.Now()
	started, _ := strconv.ParseInt(strings.TrimSpace(os.Getenv(startEnv)), 10, 64)
	ctl := os.Getenv(controlEnv)
	u, err := tcpgrace.New(tcpgrace.Options{Control: ctl, Takeover: ctl})
	if err == nil {
		err = listenAll(u, n)
	}
	if err == nil {
		err = u.Ready()
	}
	took := time.Since(begin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench taker:", err)
		return 1
	}
	fromStart := time.Now().UnixNano() - started
	defer u.Close()
	defer time.Sleep(50 * time.Millisecond) // serving a moment: the old generation's reply comes
	if err := os.WriteFile(os.Getenv(resultEnv), fmt.Appendf(nil, "%d %d\n", took.Nanoseconds(), fromStart), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "bench taker:", err)
		return 1
	}
	return 0
}
