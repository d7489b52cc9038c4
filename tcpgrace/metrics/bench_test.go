package metrics

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkAccept is a connection dialled, accepted through a listener
// registered with the Upgrader, and closed: alone, and while a registry
// with the collector is scraped every 10 ms (1,500 times as often as a
// 15 s scrape interval). The collector adds nothing to the accept path:
// it reads Status at scrape time only, which holds the Upgrader's lock
// for as long as it takes to list the listeners. The two differ only by
// what the scrapes cost the machine (see BenchmarkScrape), which the
// allocations per operation include, since they count the whole
// process's.
func BenchmarkAccept(b *testing.B) {
	b.Run("alone", func(b *testing.B) { benchAccept(b) })
	b.Run("scraped", func(b *testing.B) {
		stop := scrapeEvery(b, 10*time.Millisecond)
		defer stop()
		benchAccept(b)
	})
}

// benchAccept dials, accepts and closes one connection per iteration.
func benchAccept(b *testing.B) {
	b.ReportAllocs()
	addr := ln.Addr().String()
	for b.Loop() {
		client, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		server.Close()
		client.Close()
	}
}

// scrapeEvery gathers a registry with the collector every interval until
// the returned stop is called.
func scrapeEvery(b *testing.B, interval time.Duration) (stop func()) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(upgrader))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if _, err := reg.Gather(); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// BenchmarkScrape is the cost of one scrape: Status, and the metrics
// built from it, gathered.
func BenchmarkScrape(b *testing.B) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(upgrader))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
