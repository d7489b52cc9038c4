//go:build linux

package quic

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchPackets sends b.N short-header packets for the generation tagged
// tag to the shared socket, at most window unread at a time, and reads
// them from read: the cost per packet from the client's send to quic-go's
// ReadFrom.
func benchPackets(b *testing.B, tag byte, read *conn, k keys) {
	client, err := net.DialUDP("udp4", nil, read.udp.LocalAddr().(*net.UDPAddr))
	if err != nil { // read.udp is a copy: same address
		b.Fatal(err)
	}
	defer client.Close()
	id, _ := (&idGenerator{tag: tag, mac: newIDMAC(k.id)}).GenerateConnectionID()
	pkt := make([]byte, 1200)
	pkt[0] = 0x40
	copy(pkt[1:], id.Bytes())
	const window = 64
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			select {
			case <-credit:
			case <-time.After(time.Second): // a packet was lost: send on
			}
			client.Write(pkt)
		}
	}()
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	read.SetReadDeadline(time.Now().Add(30 * time.Second))
	for got := 0; got < b.N; got++ {
		if _, _, err := read.ReadFrom(buf); err != nil {
			b.Fatalf("after %d of %d packets: %v", got, b.N, err)
		}
		select {
		case credit <- struct{}{}:
		default:
		}
	}
	b.StopTimer()
	<-done
}

// benchPair is two generations' conns on one UDP socket; the first has
// handed off (its UDP reads stopped), as after an upgrade.
func benchPair(b *testing.B) (oldConn, newerConn *conn, k keys) {
	k = testKeys(b)
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(b, err)
	b.Cleanup(func() { udp.Close() })
	conns := make([]*conn, 2)
	for i := range conns {
		f, err := udp.File()
		require.NoError(b, err)
		pc, err := net.FilePacketConn(f)
		f.Close()
		require.NoError(b, err)
		ch, err := openChannel(k.service, byte(i+1))
		require.NoError(b, err)
		conns[i] = newConn(pc.(*net.UDPConn), ch, byte(i+1), k.id, k.reset)
		b.Cleanup(func() { conns[i].Close(); pc.Close() })
	}
	conns[0].udp.SetReadDeadline(time.Unix(1, 0))
	return conns[0], conns[1], k
}

// BenchmarkPacket: a 1200-byte packet from a client to quic-go's read,
// for the generation that reads the socket (own) and for the one that
// handed off, through the new one's forward channel (forwarded): the
// difference is the forwarding cost per packet.
func BenchmarkPacket(b *testing.B) {
	b.Run("own", func(b *testing.B) {
		_, g2, k := benchPair(b)
		benchPackets(b, 2, g2, k)
	})
	b.Run("forwarded", func(b *testing.B) {
		g1, g2, k := benchPair(b)
		benchPackets(b, 1, g1, k)
		b.ReportMetric(float64(g2.forwarded.Load())/float64(b.N), "forwarded/op")
	})
}

// BenchmarkNewGeneration: the new generation's throughput, 256 KiB
// answers on a QUIC connection of its own, alone (idle) and while a
// client of the old generation keeps its connection busy with requests,
// each of whose packets the new generation forwards (forwarding).
func BenchmarkNewGeneration(b *testing.B) {
	reply := strings.Repeat("x", 256<<10)
	for _, busy := range []bool{false, true} {
		name := map[bool]string{false: "idle", true: "forwarding"}[busy]
		b.Run(name, func(b *testing.B) {
			k := testKeys(b)
			udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(b, err)
			defer udp.Close()
			g1 := startGeneration(b, udp, 1, k, reply)
			old := dial(b, udp.LocalAddr())
			g2 := startGeneration(b, udp, 2, k, reply)
			g1.handOff()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			if busy {
				wg.Go(func() {
					for ctx.Err() == nil {
						ask(ctx, old)
					}
				})
			}
			fresh := dial(b, udp.LocalAddr())
			b.SetBytes(int64(len(reply)))
			b.ResetTimer()
			for b.Loop() {
				if got, err := ask(context.Background(), fresh); err != nil || len(got) != len(reply) {
					b.Fatalf("%d bytes, %v", len(got), err)
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			b.ReportMetric(float64(g2.e.Stats().Forwarded)/float64(b.N), "forwarded/op")
		})
	}
}

// BenchmarkForwardStep: what the new generation spends per packet of the
// old one's: classify it, write the header, send it on the old one's
// forward channel (whose reader takes it, or drops it once its queue is
// full: the send costs the same).
func BenchmarkForwardStep(b *testing.B) {
	g1, g2, k := benchPair(b)
	_ = g1
	id, _ := (&idGenerator{tag: 1, mac: newIDMAC(k.id)}).GenerateConnectionID()
	addr := netip.MustParseAddrPort("127.0.0.1:40000")
	b.SetBytes(1200)
	for b.Loop() {
		buf := buffers.Get().(*buffer)
		data := buf[headRoom : headRoom+1200]
		data[0] = 0x40
		copy(data[1:], id.Bytes())
		if kind, tag := classify(data, g2.mine, g2.mac); kind != toOwner || !g2.forward(buf, 1200, addr, tag) {
			b.Fatal("not forwarded")
		}
	}
}
