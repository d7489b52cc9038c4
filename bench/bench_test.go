// Package bench holds tcpgrace's Go benchmarks: the accept path of a
// tracked listener against a plain one, Upgrade latency against the number
// of listeners, and decoding the inheritance variable. Numbers and the
// commands that produced them are in RESULTS.md.
package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/wire"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The benchmark binary also plays the processes of BenchmarkUpgrade. New
// may be called once per process, so each timed Upgrade runs in a process
// of its own, as it does in a real service: upgraderEnv makes the binary
// the generation that upgrades once, and childEnv the next generation,
// which takes the named listeners, says ready, lingers (a child that exits
// at once after Ready is a failed upgrade) and exits.
const (
	upgraderEnv = "TCPGRACE_BENCH_UPGRADER" // the number of listeners
	resultEnv   = "TCPGRACE_BENCH_RESULT"   // where the upgrader writes what it measured
	childEnv    = "TCPGRACE_BENCH_CHILD"    // the number of listeners
)

func TestMain(m *testing.M) {
	if os.Getenv(exitEnv) != "" {
		os.Exit(0)
	}
	if n := os.Getenv(childEnv); n != "" {
		os.Exit(child(n))
	}
	if n := os.Getenv(upgraderEnv); n != "" {
		os.Exit(upgrader(n))
	}
	if n := os.Getenv(giverEnv); n != "" {
		os.Exit(giver(n))
	}
	if n := os.Getenv(takerEnv); n != "" {
		os.Exit(taker(n))
	}
	if v := os.Getenv(tgServerEnv); v != "" {
		os.Exit(tgServer(v))
	}
	if v := os.Getenv(tfServerEnv); v != "" {
		os.Exit(tfServer(v))
	}
	os.Exit(m.Run())
}

func child(count string) int {
	n, _ := strconv.Atoi(count)
	u, err := tcpgrace.New(tcpgrace.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	for i := range n {
		if _, err := u.Listen(fmt.Sprintf("l%d", i), "tcp", "127.0.0.1:0"); err != nil {
			u.Fail(err)
			return 1
		}
	}
	if err := u.Ready(); err != nil {
		return 1
	}
	time.Sleep(childLinger)
	return 0
}

// childLinger is how long a benchmark child stays after Ready.
const childLinger = 500 * time.Millisecond

// BenchmarkAccept compares the accept path of a plain listener with one
// handed out by the registry (which tracks every connection).
func BenchmarkAccept(b *testing.B) {
	b.Run("impl=plain", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		benchAccept(b, ln)
	})
	b.Run("impl=tracked", func(b *testing.B) {
		ln := trackedListener(b)
		defer ln.Close()
		benchAccept(b, ln)
	})
	// Observed: the same, while Status is read every millisecond, far
	// more often than any scrape would (the Prometheus collector reads
	// it once per scrape); events are never emitted on this path.
	b.Run("impl=observed", func(b *testing.B) {
		ln := trackedListener(b)
		defer ln.Close()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					shared.u.Status()
				}
			}
		}()
		benchAccept(b, ln)
		close(stop)
		<-done
	})
}

// benchAccept accepts and closes b.N connections that four dialers make.
func benchAccept(b *testing.B, ln net.Listener) {
	var dialed atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for dialed.Add(1) <= int64(b.N) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					select {
					case <-stop:
						return
					default:
					}
					continue
				}
				c.Close()
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conns/s")
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// BenchmarkAcceptQueued measures the accept path alone: each round dials
// a batch of connections with the timer stopped, so that they wait
// established in the accept queue, then times accepting and closing
// them. BenchmarkAccept's dialers share the two CPUs with the accepts and
// spread its results by ±10%, wider than the difference to find; here
// the timed loop is the listener's and nothing else runs. Plain against
// tracked, alternating in one run (-count repeats both):
//
//	go test -run '^$' -bench AcceptQueued -count 10 ./bench > q.txt && benchstat -col /impl q.txt
func BenchmarkAcceptQueued(b *testing.B) {
	b.Run("impl=plain", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		benchAcceptQueued(b, ln)
	})
	b.Run("impl=tracked", func(b *testing.B) {
		ln := trackedListener(b)
		defer ln.Close()
		benchAcceptQueued(b, ln)
	})
}

// acceptBatch is how many connections BenchmarkAcceptQueued queues per
// round: well under the accept queue's length (somaxconn, 4096 by
// default), so that none waits in the SYN stage.
const acceptBatch = 256

// benchAcceptQueued accepts and closes b.N connections, dialed in
// batches with the timer stopped.
func benchAcceptQueued(b *testing.B, ln net.Listener) {
	b.ReportAllocs()
	b.ResetTimer()
	var timed time.Duration
	for done := 0; done < b.N; done += acceptBatch {
		timed += acceptRound(b, ln, min(acceptBatch, b.N-done))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/timed.Seconds(), "conns/s")
}

// acceptRound dials n connections to ln with b's timer stopped, so that
// they wait established in its accept queue, then accepts and closes
// them with the timer running, and returns the time that took. The
// clients are closed with the timer stopped.
func acceptRound(b *testing.B, ln net.Listener, n int) time.Duration {
	b.StopTimer()
	clients := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	b.StartTimer()
	start := time.Now()
	for range clients {
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	took := time.Since(start)
	b.StopTimer()
	for _, c := range clients {
		c.Close()
	}
	b.StartTimer()
	return took
}

// BenchmarkAcceptTrackedAgainstPlain is BenchmarkAcceptQueued's two
// listeners alternated in one loop: each iteration accepts a round of
// acceptBatch queued connections on each, in turns first, so that both
// see the same moments of a machine whose speed drifts (the
// sub-benchmarks run one after the other). It reports the median rate of
// each, over the rounds, and their ratio.
func BenchmarkAcceptTrackedAgainstPlain(b *testing.B) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	tracked := trackedListener(b)
	defer tracked.Close()
	rate := func(ln net.Listener) float64 { return acceptBatch / acceptRound(b, ln, acceptBatch).Seconds() }
	var plainRates, trackedRates []float64
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			plainRates = append(plainRates, rate(plain))
			trackedRates = append(trackedRates, rate(tracked))
		} else {
			trackedRates = append(trackedRates, rate(tracked))
			plainRates = append(plainRates, rate(plain))
		}
	}
	mp, mt := medianOf(plainRates), medianOf(trackedRates)
	b.ReportMetric(1e9/mt, "ns/op") // a tracked accept
	b.ReportMetric(mt, "conns/s")
	b.ReportMetric(mp, "plain-conns/s")
	b.ReportMetric(mt/mp, "ratio-to-plain")
}

// BenchmarkUpgrade times Upgrade, from the call until the next generation
// is ready, with 1, 16 and 256 registered listeners. The child is this
// benchmark binary, which takes every listener and says ready; once the
// call is timed, the upgrader kills it and waits until it is gone, so
// that no iteration pays for an earlier one's teardown of its sockets.
//
// Each iteration starts a fresh upgrader process (this binary again),
// which registers the listeners, measures its one Upgrade call as the
// benchmark timer would (wall time, and the bytes and allocations
// runtime.MemStats counts around it) and reports it; those measurements
// replace ns/op, B/op and allocs/op. The benchmark's own clock, which
// also counts starting the upgrader, only sets the number of iterations.
func BenchmarkUpgrade(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			result := filepath.Join(b.TempDir(), "result")
			var sum upgradeCost
			for range b.N {
				c := upgradeOnce(b, self, n, result)
				sum.ns += c.ns
				sum.bytes += c.bytes
				sum.allocs += c.allocs
			}
			b.ReportMetric(float64(sum.ns)/float64(b.N), "ns/op")
			b.ReportMetric(float64(sum.bytes)/float64(b.N), "B/op")
			b.ReportMetric(float64(sum.allocs)/float64(b.N), "allocs/op")
		})
	}
}

// BenchmarkUpgradeManyAgainstOne alternates an Upgrade with 256 listeners
// and one with 1, as BenchmarkUpgrade runs each, so that both sides of the
// ratio are measured in the same minutes: on a machine whose speed drifts
// over minutes, BenchmarkUpgrade's sub-benchmarks, run one after the
// other, compare different moments. It reports the median time of each
// and ratio-to-1, the 256 median over the 1 median.
func BenchmarkUpgradeManyAgainstOne(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	result := filepath.Join(b.TempDir(), "result")
	var one, many []float64
	for i := 0; b.Loop(); i++ {
		order := []int{1, 256}
		if i%2 == 1 {
			order = []int{256, 1}
		}
		for _, n := range order {
			c := upgradeOnce(b, self, n, result)
			if n == 1 {
				one = append(one, float64(c.ns))
			} else {
				many = append(many, float64(c.ns))
			}
		}
	}
	m1, m256 := medianOf(one), medianOf(many)
	b.ReportMetric(m256, "ns/op")
	b.ReportMetric(m1, "one-ns/op")
	b.ReportMetric(m256/m1, "ratio-to-1")
}

// medianOf is the median of vs, which it sorts.
func medianOf(vs []float64) float64 {
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// upgradeCost is what one Upgrade call cost its process.
type upgradeCost struct{ ns, bytes, allocs uint64 }

// upgradeOnce runs the upgrader process for n listeners and returns what
// it measured, which it wrote to the file result.
func upgradeOnce(b *testing.B, self string, n int, result string) upgradeCost {
	os.Remove(result)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", upgraderEnv, n), resultEnv+"="+result)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("bench upgrader: %v", err)
	}
	raw, err := os.ReadFile(result)
	if err != nil {
		b.Fatal(err)
	}
	var c upgradeCost
	if _, err := fmt.Sscan(string(raw), &c.ns, &c.bytes, &c.allocs); err != nil {
		b.Fatalf("bench upgrader result %q: %v", raw, err)
	}
	return c
}

// upgrader is the process BenchmarkUpgrade starts for one iteration: a
// first generation with count listeners that upgrades once to a child of
// this binary and writes the cost of its Upgrade call to the result file.
func upgrader(count string) int {
	n, _ := strconv.Atoi(count)
	result := os.Getenv(resultEnv)
	os.Unsetenv(upgraderEnv)
	os.Unsetenv(resultEnv)
	os.Setenv(childEnv, count) // Upgrade passes our environment on
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench upgrader:", err)
		return 1
	}
	var next atomic.Int64 // the next generation's pid
	u, err := tcpgrace.New(tcpgrace.Options{Executable: self, Args: []string{self}, ReadyTimeout: 30 * time.Second,
		OnEvent: func(e tcpgrace.Event) {
			if e.Kind == tcpgrace.EventUpgradeStarted {
				next.Store(int64(e.PID))
			}
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench upgrader:", err)
		return 1
	}
	defer u.Close()
	for i := range n {
		if _, err := u.Listen(fmt.Sprintf("l%d", i), "tcp", "127.0.0.1:0"); err != nil {
			fmt.Fprintln(os.Stderr, "bench upgrader:", err)
			return 1
		}
	}
	if err := u.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "bench upgrader:", err)
		return 1
	}
	c, err := timeUpgrade(u)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench upgrader:", err)
		return 1
	}
	endChild(int(next.Load()))
	if err := os.WriteFile(result, fmt.Appendf(nil, "%d %d %d\n", c.ns, c.bytes, c.allocs), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "bench upgrader:", err)
		return 1
	}
	return 0
}

// endChild kills the next generation, once timed, and waits until it is
// gone (this process's Upgrader reaps it), so that its exit, which tears
// down every socket it holds, falls in no later iteration's time.
func endChild(pid int) {
	if pid <= 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			return
		}
	}
}

// timeUpgrade calls u.Upgrade and measures it as testing.B measures an
// iteration: wall time, and MemStats' TotalAlloc and Mallocs before and
// after.
func timeUpgrade(u *tcpgrace.Upgrader) (upgradeCost, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	err := u.Upgrade(context.Background())
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return upgradeCost{
		ns:     uint64(elapsed.Nanoseconds()),
		bytes:  after.TotalAlloc - before.TotalAlloc,
		allocs: after.Mallocs - before.Mallocs,
	}, err
}

// BenchmarkDecode256 decodes a TCPGRACE_FDS value with 256 entries.
func BenchmarkDecode256(b *testing.B) {
	env := &wire.Env{Generation: 2, ReadyFD: 3}
	for i := range 256 {
		env.Entries = append(env.Entries, wire.Entry{
			Name: fmt.Sprintf("listener-%d", i), FD: 4 + i, Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", 10000+i),
		})
	}
	value := env.Encode(42)
	lookup := func(k string) (string, bool) { return value, k == wire.EnvFDs }
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	for b.Loop() {
		if _, err := wire.Decode(lookup, 1, 42); err != nil {
			b.Fatal(err)
		}
	}
}

// shared is the one Upgrader of this benchmark process (New may be called
// once per process), made on first use. The benchmarks that measure its
// listeners register one each, under a name of their own, and close it.
var shared struct {
	once  sync.Once
	u     *tcpgrace.Upgrader
	err   error
	names atomic.Int64
}

// trackedListener registers a new listener on loopback with the shared
// Upgrader: a listener the registry hands out, which tracks every
// connection. The caller closes it.
func trackedListener(b *testing.B) net.Listener {
	shared.once.Do(func() { shared.u, shared.err = tcpgrace.New(tcpgrace.Options{}) })
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	name := fmt.Sprintf("bench-%d", shared.names.Add(1))
	ln, err := shared.u.Listen(name, "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}
