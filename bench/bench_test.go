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
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/wire"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// childEnv makes the benchmark binary play the next generation: it takes
// the named listeners, says ready, lingers (a child that exits at once
// after Ready is a failed upgrade) and exits.
const childEnv = "TCPGRACE_BENCH_CHILD"

func TestMain(m *testing.M) {
	if n := os.Getenv(childEnv); n != "" {
		os.Exit(child(n))
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
		u := coldUpgrader(b)
		defer u.Close()
		ln, err := u.Listen("bench", "tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		benchAccept(b, ln)
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

// BenchmarkUpgrade times Upgrade, from the call until the next generation
// is ready, with 1, 16 and 256 registered listeners. The child is this
// benchmark binary, which takes every listener, says ready and exits.
func BenchmarkUpgrade(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			b.Setenv(childEnv, strconv.Itoa(n))
			for range b.N {
				b.StopTimer()
				u := coldUpgraderWith(b, tcpgrace.Options{Executable: self, Args: []string{self}, ReadyTimeout: 30 * time.Second})
				for i := range n {
					if _, err := u.Listen(fmt.Sprintf("l%d", i), "tcp", "127.0.0.1:0"); err != nil {
						b.Fatal(err)
					}
				}
				if err := u.Ready(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := u.Upgrade(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				u.Close()
			}
		})
	}
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

func coldUpgrader(b *testing.B) *tcpgrace.Upgrader {
	return coldUpgraderWith(b, tcpgrace.Options{})
}

func coldUpgraderWith(b *testing.B, opts tcpgrace.Options) *tcpgrace.Upgrader {
	wire.ResetTake() // nothing is inherited here: each New starts cold
	u, err := tcpgrace.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	return u
}
