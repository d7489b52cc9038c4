//go:build linux

package tcpgrace

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// udpPeer is a client socket that the tests write replies to.
func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// assertReply writes msg from pc to peer and checks it arrives.
func assertReply(t *testing.T, pc net.PacketConn, peer *net.UDPConn, msg, why string) {
	t.Helper()
	_, err := pc.WriteTo([]byte(msg), peer.LocalAddr())
	require.NoError(t, err, "%s: writing a reply", why)
	peer.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 64)
	n, err := peer.Read(buf)
	require.NoError(t, err, "%s: the reply arrives", why)
	assert.Equal(t, msg, string(buf[:n]), why)
}

// blockedRead starts a ReadFrom on pc and returns its error channel; it
// reports whether Exit was closed when the read returned.
func blockedRead(u *Upgrader, pc net.PacketConn) <-chan bool {
	done := make(chan bool, 1)
	go func() {
		pc.ReadFrom(make([]byte, 64))
		select {
		case <-u.Exit():
			done <- true
		default:
			done <- false
		}
	}()
	return done
}

// TestHandOffKeepsPacketConnForReplies is the regression test for UDP
// replies lost at hand-off: the old generation's packet conn was closed
// at once, and a reply to a datagram it had read failed. After a hand-off
// a read blocked on the old conn returns (with Exit already closed),
// later reads fail at once, replies are still written, and Shutdown
// closes the conn.
func TestHandOffKeepsPacketConnForReplies(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	peer := udpPeer(t)
	read := blockedRead(h.u, h.dns)
	pid := h.upgradeToServingChild("upgrade with a read blocked")
	select {
	case exited := <-read:
		assert.True(t, exited, "the read that returns at the hand-off finds Exit closed")
	case <-time.After(ioTimeout):
		t.Fatal("a read blocked at the hand-off should return")
	}
	_, _, err := h.dns.ReadFrom(make([]byte, 64))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "reading has stopped")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "a read after the hand-off is a timeout")
	_, ok := h.dns.(*net.UDPConn)
	assert.True(t, ok, "ListenPacket's result stays a *net.UDPConn")
	assertReply(t, h.dns, peer, "late reply", "after the hand-off")

	require.NoError(t, h.u.Shutdown(context.Background()))
	_, err = h.dns.WriteTo([]byte("too late"), peer.LocalAddr())
	assert.ErrorIs(t, err, net.ErrClosed, "Shutdown closes the packet conn")
	h.stopChild(pid)
}

// TestShutdownClosesPacketConnsLast: Shutdown stops reading on packet
// conns at once but closes them only when its wait for connections is
// over, so replies can be written while it drains; Close closes them at
// once.
func TestShutdownClosesPacketConnsLast(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	pc, err := u.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err)
	peer := udpPeer(t)
	client, err := net.Dial("tcp4", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	held, err := ln.Accept() // tracked: Shutdown waits for it
	require.NoError(t, err)

	read := blockedRead(u, pc)
	shut := make(chan error, 1)
	go func() { shut <- u.Shutdown(context.Background()) }()
	select {
	case exited := <-read:
		assert.True(t, exited, "the read that returns at Shutdown finds Exit closed")
	case <-time.After(ioTimeout):
		t.Fatal("a read blocked at Shutdown should return")
	}
	assertReply(t, pc, peer, "reply while draining", "while Shutdown waits for a connection")
	held.Close()
	require.NoError(t, <-shut)
	_, err = pc.WriteTo([]byte("too late"), peer.LocalAddr())
	assert.ErrorIs(t, err, net.ErrClosed, "Shutdown closed the packet conn at its end")

	u2 := newColdUpgrader(t, Options{})
	pc2, err := u2.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err)
	require.NoError(t, u2.Close())
	_, err = pc2.WriteTo([]byte("too late"), peer.LocalAddr())
	assert.ErrorIs(t, err, net.ErrClosed, "Close closes the packet conn at once")
}
