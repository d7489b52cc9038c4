package quic

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Buffers: headRoom bytes before each packet leave room for the forward
// header, so that forwarding writes it in place instead of copying the
// packet; a QUIC packet over UDP is at most 1500 bytes on the paths we
// serve, and a larger one is cut (and fails to decrypt) as quic-go's own
// reads would.
const (
	headRoom  = 1 + 1 + 2 + 16 // version, family, port, IPv6 address
	maxPacket = 2048
	// queueLen bounds the packets read for this generation but not yet
	// taken by quic-go; past it they are dropped, as a full socket
	// buffer drops them.
	queueLen = 1024
	// resetLen is the size of the stateless resets quic-go sends (its
	// protocol.MinStatelessResetSize: 1 + 20 + 4 + 1 + 16).
	resetLen = 42
	// maxOrphans bounds the clients remembered for counting resets.
	maxOrphans = 1024
)

type buffer [headRoom + maxPacket]byte

var buffers = sync.Pool{New: func() any { return new(buffer) }}

// packet is one datagram for this generation.
type packet struct {
	buf  *buffer
	data []byte // within buf
	addr netip.AddrPort
}

// errGone and errFull are a channel's send errors: no generation has the
// tag's channel (it is gone), or its queue is full (the packet is dropped).
var (
	errGone = errors.New("tcpgrace/quic: no generation has that forward channel")
	errFull = errors.New("tcpgrace/quic: the forward channel is full")
)

// channel is a generation's forward channel: it receives what the other
// generations forward to it, and sends to theirs (channel_linux.go).
type channel interface {
	// send sends frame to the channel of the generation tagged tag
	// without waiting: errGone, errFull or another error.
	send(tag byte, frame []byte) error
	// recv waits for the next frame from a sender allowed to send.
	recv(b []byte) (int, error)
	// refused counts the frames dropped for their sender.
	refused() uint64
	close() error
}

// conn is the net.PacketConn quic-go reads and writes: reads are this
// generation's packets, from the UDP socket and from its forward channel;
// writes go to the UDP socket.
type conn struct {
	udp      *net.UDPConn
	ch       channel
	mine     byte
	mac      *idMAC // the router's
	resetKey [32]byte
	queue    chan packet
	closed   chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes

	omu      sync.Mutex
	orphans  map[netip.AddrPort][idLen]byte // client -> an ID of a gone generation it used
	norphans atomic.Int32

	forwarded, forwardedBytes, received, orphaned, resets, dropped atomic.Uint64
}

func newConn(udp *net.UDPConn, ch channel, mine byte, idKey, resetKey [32]byte) *conn {
	c := &conn{udp: udp, ch: ch, mine: mine, mac: newIDMAC(idKey), resetKey: resetKey,
		queue: make(chan packet, queueLen), closed: make(chan struct{}), wake: make(chan struct{}),
		orphans: map[netip.AddrPort][idLen]byte{}}
	c.wg.Add(2)
	go c.routeUDP()
	go c.readChannel()
	return c
}

// routeUDP reads the UDP socket until this generation's reads stop (the
// hand-off sets a past deadline) or the conn closes, and routes each
// packet: here, or to the generation that owns it.
func (c *conn) routeUDP() {
	defer c.wg.Done()
	for {
		buf := buffers.Get().(*buffer)
		n, addr, err := c.udp.ReadFromUDPAddrPort(buf[headRoom:])
		if err != nil {
			buffers.Put(buf)
			var ne net.Error
			if errors.As(err, &ne) && !ne.Timeout() && ne.Temporary() { //nolint:staticcheck // as quic-go does
				continue
			}
			return // the hand-off, or closed
		}
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		data := buf[headRoom : headRoom+n]
		switch kind, tag := classify(data, c.mine, c.mac); kind {
		case toOwner:
			if c.forward(buf, n, addr, tag) {
				continue
			}
			c.noteOrphan(data, addr) // its owner is gone: quic-go resets it
		case toNewest:
			if c.forward(buf, n, addr, c.mine+1) {
				continue
			}
		}
		c.deliver(packet{buf: buf, data: data, addr: addr})
	}
}

// forward sends the packet of n bytes in buf (after headRoom) to the
// generation tagged tag, with the client's address in front. It reports
// false if that generation is gone (the packet is then this one's to
// handle), true if it took the packet or it was dropped.
func (c *conn) forward(buf *buffer, n int, addr netip.AddrPort, tag byte) bool {
	start := putHeader(buf, addr)
	err := c.ch.send(tag, buf[start:headRoom+n])
	if errors.Is(err, errGone) {
		return false
	}
	if err != nil {
		c.dropped.Add(1)
	} else {
		c.forwarded.Add(1)
		c.forwardedBytes.Add(uint64(n))
	}
	buffers.Put(buf)
	return true
}

// readChannel delivers what other generations forward here, until the
// channel closes. A forwarded packet is never forwarded again.
func (c *conn) readChannel() {
	defer c.wg.Done()
	for {
		buf := buffers.Get().(*buffer)
		n, err := c.ch.recv(buf[:])
		if err != nil {
			buffers.Put(buf)
			return
		}
		addr, hlen, ok := parseHeader(buf[:n])
		if !ok {
			buffers.Put(buf)
			c.dropped.Add(1)
			continue
		}
		c.received.Add(1)
		c.deliver(packet{buf: buf, data: buf[hlen:n], addr: addr})
	}
}

// deliver queues p for quic-go, or drops it if the queue is full.
func (c *conn) deliver(p packet) {
	select {
	case c.queue <- p:
	default:
		c.dropped.Add(1)
		buffers.Put(p.buf)
	}
}

// noteOrphan remembers the ID a client used for a generation that is
// gone, so that WriteTo can count the stateless reset quic-go answers.
func (c *conn) noteOrphan(data []byte, addr netip.AddrPort) {
	c.orphaned.Add(1)
	if data[0]&0x80 != 0 {
		return // quic-go resets only short-header packets
	}
	c.omu.Lock()
	defer c.omu.Unlock()
	if len(c.orphans) >= maxOrphans {
		clear(c.orphans)
	}
	c.orphans[addr] = [idLen]byte(data[1 : 1+idLen])
	c.norphans.Store(int32(len(c.orphans)))
}

// countReset counts b, about to go to addr, if it is the stateless reset
// for an ID remembered by noteOrphan: a short-header packet of quic-go's
// reset size ending in the token quic-go computes (HMAC-SHA256 of the ID
// under the reset key, 16 bytes). A quic-go that computed it otherwise
// would still reset; only the count would stay 0.
func (c *conn) countReset(b []byte, addr net.Addr) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || len(b) != resetLen || b[0]&0x80 != 0 {
		return
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	c.omu.Lock()
	defer c.omu.Unlock()
	id, ok := c.orphans[ap]
	if !ok {
		return
	}
	mac := hmac.New(sha256.New, c.resetKey[:])
	mac.Write(id[:])
	if hmac.Equal(mac.Sum(nil)[:16], b[resetLen-16:]) {
		c.resets.Add(1)
		delete(c.orphans, ap)
		c.norphans.Store(int32(len(c.orphans)))
	}
}

// ReadFrom returns the next packet for this generation. It blocks until
// there is one, the read deadline passes (os.ErrDeadlineExceeded) or the
// conn is closed (net.ErrClosed).
func (c *conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, wake := c.deadline, c.wake
		c.mu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, addr, err, again := c.take(b, wake, timeout)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, addr, err
		}
	}
}

// take is one wait of ReadFrom; again says the deadline changed.
func (c *conn) take(b []byte, wake chan struct{}, timeout <-chan time.Time) (n int, addr net.Addr, err error, again bool) {
	select {
	case p := <-c.queue:
		n := copy(b, p.data)
		addr := net.UDPAddrFromAddrPort(p.addr)
		buffers.Put(p.buf)
		return n, addr, nil, false
	case <-c.closed:
		return 0, nil, net.ErrClosed, false
	case <-wake:
		return 0, nil, nil, true
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded, false
	}
}

// WriteTo writes to the shared UDP socket: every generation answers its
// clients there itself.
func (c *conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.norphans.Load() > 0 {
		c.countReset(b, addr)
	}
	return c.udp.WriteTo(b, addr)
}

// Close stops the routing and the forward channel; the UDP socket stays
// open (tcpgrace's Upgrader owns it). Safe to call twice.
func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		c.udp.SetReadDeadline(time.Unix(1, 0)) // ends routeUDP's read
		err = c.ch.close()
		c.wg.Wait()
		for len(c.queue) > 0 {
			buffers.Put((<-c.queue).buf)
		}
	})
	return err
}

// LocalAddr is the UDP socket's address.
func (c *conn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline sets the read and the write deadline.
func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of ReadFrom, which quic-go uses to
// stop its reads; the UDP socket's own deadline is tcpgrace's.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

// SetWriteDeadline sets the UDP socket's write deadline.
func (c *conn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// SetReadBuffer and SetWriteBuffer size the shared UDP socket's buffers
// (quic-go asks for 7 MiB).
func (c *conn) SetReadBuffer(n int) error  { return c.udp.SetReadBuffer(n) }
func (c *conn) SetWriteBuffer(n int) error { return c.udp.SetWriteBuffer(n) }

// putHeader writes the forward header for addr just before headRoom in
// buf and returns where it starts: a version byte (1), the address
// family (4 or 6), the port (big-endian), the address (4 or 16 bytes).
func putHeader(buf *buffer, addr netip.AddrPort) int {
	ip := addr.Addr()
	fam, alen := byte(6), 16
	if ip.Is4() {
		fam, alen = 4, 4
	}
	start := headRoom - 4 - alen
	h := buf[start:headRoom]
	h[0], h[1] = headerVersion, fam
	h[2], h[3] = byte(addr.Port()>>8), byte(addr.Port())
	if ip.Is4() {
		a := ip.As4()
		copy(h[4:], a[:])
	} else {
		a := ip.As16()
		copy(h[4:], a[:])
	}
	return start
}

// headerVersion is the first byte of every forwarded frame.
const headerVersion = 1

// parseHeader reads putHeader's header at the start of b: the client's
// address and the header's length; ok is false if b holds no header of
// this version.
func parseHeader(b []byte) (addr netip.AddrPort, hlen int, ok bool) {
	if len(b) < 4 || b[0] != headerVersion {
		return addr, 0, false
	}
	port := uint16(b[2])<<8 | uint16(b[3])
	switch {
	case b[1] == 4 && len(b) >= 8:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), 8, true
	case b[1] == 6 && len(b) >= 20:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[4:20])), port), 20, true
	}
	return addr, 0, false
}
