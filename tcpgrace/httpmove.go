package tcpgrace

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/handoff"
)

// RunHTTP moves idle HTTP/1.x connections to the next generation. The
// moment is safe when net/http waits for a connection's next request with
// nothing of it read: right after StateIdle (or StateNew), its first Read
// asks for a whole empty buffer (bufio's 4096 bytes). A request already
// buffered (pipelining) is served here first, and the connection moves at
// its next idle Read. While this generation drains, such a Read waits for
// the socket to become readable without reading (MSG_PEEK), so whatever
// the client sends meanwhile stays in the kernel and moves with the
// socket; the drain takes the parked connections, gives them over in one
// transaction, and their Reads then end (io.EOF, which net/http closes
// without a word) or, if the transaction failed, read on here.

// httpReadBuf is the size of net/http's read buffer (bufio's default): a
// Read of this size right after StateIdle or StateNew finds nothing
// buffered.
const httpReadBuf = 4096

// longAgo is a deadline in the past: it wakes a blocked Read.
var longAgo = time.Unix(1, 0)

// moveState is where a moveConn stands in a move.
type moveState int

const (
	stay  moveState = iota // served here
	taken                  // in a transaction: its parked Read waits for the outcome
	moved                  // the next generation holds it
)

// moveConn is an HTTP/1.x connection of RunHTTP that can move.
type moveConn struct {
	net.Conn // the tracked connection
	name     string
	raw      syscall.RawConn
	d        *httpDrain
	fresh    bool // the next Read is the first since StateIdle or StateNew (the serving goroutine's only)
	adopted  bool // handed over, its first Read not done yet (the serving goroutine's only)

	mu      sync.Mutex
	reading bool // in an idle Read that does read
	woken   bool // the drain cut that Read short to park it
	parked  bool // in an idle Read that only waits: nothing of the next request read
	state   moveState
	decided chan struct{} // closed when a transaction's outcome is known
	rdl     time.Time     // the read deadline net/http set last
}

// movable wraps c if it is a connection of the Upgrader's that can move:
// a TCP or Unix stream connection of a registered listener.
func (d *httpDrain) movable(c net.Conn) net.Conn {
	var tc *trackedConn
	var sc syscall.Conn
	switch v := c.(type) {
	case *tcpConn:
		tc, sc = v.t, v
	case *unixConn:
		tc, sc = v.t, v
	default:
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil || tc.u != d.u {
		return c
	}
	return &moveConn{Conn: c, name: tc.name, raw: raw, d: d, adopted: tc.resumed}
}

// Read is the connection's Read, which parks while this generation drains
// when nothing of the next request has been read (see above).
func (c *moveConn) Read(p []byte) (int, error) {
	if !c.fresh || len(p) != httpReadBuf {
		c.fresh = false
		return c.Conn.Read(p)
	}
	c.fresh = false
	if c.adopted {
		c.adopted = false
		if c.idleWait() {
			return c.parkedRead(p)
		}
	}
	if n, err, park := c.idleRead(p); !park {
		return n, err
	}
	return c.parkedRead(p)
}

// idleWait is, for a connection handed over, what net/http does for an
// idle one: it waits for the first bytes of the next request (up to the
// server's IdleTimeout, or ReadTimeout without one) before the request's
// deadline, which net/http set for a new connection (ReadHeaderTimeout),
// starts; the deadline is moved on by the wait. park says the drain woke
// it to park (nothing was read).
func (c *moveConn) idleWait() (park bool) {
	c.mu.Lock()
	if c.d.parking.Load() {
		c.mu.Unlock()
		return true
	}
	c.reading = true
	rdl := c.rdl
	var idle time.Time
	if d := c.d.idleTimeout(); d > 0 {
		idle = time.Now().Add(d)
	}
	c.Conn.SetReadDeadline(idle)
	c.mu.Unlock()
	begin := time.Now()
	waitReadable(c.raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	park = c.woken
	if park {
		c.d.waking.Add(-1)
	}
	c.reading, c.woken = false, false
	if !rdl.IsZero() {
		c.rdl = rdl.Add(time.Since(begin))
	}
	c.Conn.SetReadDeadline(c.rdl)
	return park
}

// idleRead reads unless this generation drains; park says to park instead
// (nothing was read).
func (c *moveConn) idleRead(p []byte) (n int, err error, park bool) {
	c.mu.Lock()
	if c.d.parking.Load() {
		c.mu.Unlock()
		return 0, nil, true
	}
	c.reading = true
	c.mu.Unlock()
	n, err = c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	woken := c.woken
	if woken {
		c.d.waking.Add(-1)
	}
	c.reading, c.woken = false, false
	if n == 0 && woken && errors.Is(err, os.ErrDeadlineExceeded) {
		c.Conn.SetReadDeadline(c.rdl)
		return 0, nil, true
	}
	return n, err, false
}

// wake cuts an idle Read short so that it parks; the drain calls it once
// parking is set.
func (c *moveConn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading && !c.woken {
		c.woken = true
		c.d.waking.Add(1)
		c.Conn.SetReadDeadline(longAgo)
	}
}

// parkedRead waits until the connection is readable or taken; it reads
// only if it stays.
func (c *moveConn) parkedRead(p []byte) (int, error) {
	c.mu.Lock()
	c.parked = true
	c.mu.Unlock()
	c.d.poke()
	for {
		waitReadable(c.raw) // returns early when take sets the deadline
		c.mu.Lock()
		switch c.state {
		case moved:
			c.parked = false
			c.mu.Unlock()
			return 0, io.EOF
		case taken:
			ch := c.decided
			c.mu.Unlock()
			<-ch
			continue
		}
		c.parked = false
		c.mu.Unlock()
		return c.Conn.Read(p) // the server's deadline, if passed, ends it at once
	}
}

// take marks a parked connection as in a transaction, and wakes its Read;
// false if it is not parked.
func (c *moveConn) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.parked || c.state != stay {
		return false
	}
	c.state, c.decided = taken, make(chan struct{})
	c.Conn.SetReadDeadline(longAgo)
	return true
}

// decide ends a transaction: moved, or staying with net/http's deadline.
func (c *moveConn) decide(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.state = moved
	} else {
		c.state = stay
		c.Conn.SetReadDeadline(c.rdl)
	}
	close(c.decided)
}

// isParked reports a connection the next move will take.
func (c *moveConn) isParked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parked && c.state == stay
}

// SetReadDeadline records net/http's deadline and sets it, unless a
// transaction holds the connection.
func (c *moveConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	if c.state == taken || c.woken {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *moveConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// ReadFrom keeps the connection's own ReadFrom (sendfile, splice).
func (c *moveConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite shuts the writing side down, as net/http does before it
// closes a connection it answered with "Connection: close" (its FIN goes
// first, so that the client reads the answer before any reset).
func (c *moveConn) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite() // movable wraps only TCP and Unix connections
}

// SyscallConn gives access to the underlying socket.
func (c *moveConn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

// moveListener wraps the connections a listener accepts as moveConns.
type moveListener struct {
	net.Listener
	d *httpDrain
}

// Accept is the listener's Accept.
func (l *moveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.d.movable(c), nil
}

// moveKey marks a request's context: its connection can move.
type moveKey struct{}

// wrap returns the listeners RunHTTP serves: lns with their connections
// movable, and one more for the connections the previous generation hands
// over; lns unchanged under DrainOnly.
func (d *httpDrain) wrap(lns []net.Listener) []net.Listener {
	if d.u == nil || d.u.opts.DrainOnly {
		return lns
	}
	out := make([]net.Listener, 0, len(lns)+1)
	for _, ln := range lns {
		if l, ok := ln.(*listener); ok && l.u == d.u {
			ln = &moveListener{Listener: ln, d: d}
		}
		out = append(out, ln)
	}
	if al := d.u.claimFor(lns); al != nil {
		out = append(out, &moveListener{Listener: al, d: d})
	}
	return out
}

// startMoving says whether connections move in this drain, and if so
// parks the idle ones.
func (d *httpDrain) startMoving() bool {
	if d.u == nil || d.u.opts.DrainOnly || !d.u.out.Load().usable() {
		return false
	}
	d.moveBegan = time.Now()
	d.handing.Store(true)
	d.parking.Store(true)
	for _, c := range d.moveConns() {
		c.wake()
	}
	d.settle()
	return true
}

// settleWait bounds how long the first move waits for the idle Reads
// startMoving woke to park, so that they go over in one transaction.
const settleWait = 50 * time.Millisecond

func (d *httpDrain) settle() {
	for deadline := time.Now().Add(settleWait); d.waking.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
}

func (d *httpDrain) moveConns() []*moveConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cs []*moveConn
	for c := range d.conns {
		if mc, ok := c.(*moveConn); ok {
			cs = append(cs, mc)
		}
	}
	return cs
}

// moveParked gives the parked connections to the next generation in one
// transaction; false if the channel failed, and the drain goes on as
// without it.
func (d *httpDrain) moveParked(ctx context.Context) bool {
	var taken []*moveConn
	var items []handoff.Item
	for _, c := range d.moveConns() {
		if !c.take() {
			continue
		}
		f, err := dupConn(c.raw)
		if err != nil {
			c.decide(false)
			d.u.log.Warn("an idle connection stays: cannot duplicate it", "listener", c.name, "err", err)
			continue
		}
		taken = append(taken, c)
		items = append(items, handoff.Item{Kind: itemConn, Data: connItem{name: c.name}.encode(), Files: []*os.File{f}})
	}
	if len(taken) == 0 {
		return true
	}
	err := d.u.out.Load().give(ctx, items)
	if err != nil {
		for _, it := range items {
			closeFiles(it.Files)
		}
		d.handing.Store(false) // before they read on: their answers say "Connection: close"
	}
	for _, c := range taken {
		c.decide(err == nil)
	}
	if err != nil {
		d.u.log.Warn("idle connections not handed over: they drain here", "connections", len(taken), "err", err)
		return false
	}
	d.u.countMoved(len(taken))
	d.u.log.Info("idle connections handed to the next generation", "connections", len(taken),
		"since_drain", time.Since(d.moveBegan).Round(10*time.Microsecond))
	return true
}
