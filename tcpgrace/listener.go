package tcpgrace

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// listener is what Listen hands out: it tracks the connections it accepts
// and tells the registry when the user closes it.
type listener struct {
	net.Listener
	u    *Upgrader
	s    *socket
	once sync.Once
}

// Accept waits for the next connection and tracks it until it is closed.
// Once a hand-off or Shutdown closed the listener it fails with
// net.ErrClosed, also while its fd is still being closed (a hand-off
// stops it with a past deadline first: see Upgrader.endUpgrade).
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if l.s.closedByUpgrader.Load() {
			return nil, l.closedError("accept")
		}
		return nil, err
	}
	return l.u.track(c, l.s.name), nil
}

// Close closes the listener; see Upgrader.Listen for what is released.
// Closing a listener that the Upgrader already closed (after an upgrade or
// in Shutdown) returns nil, so servers such as http.Server that close
// their listeners on shutdown see no spurious error.
func (l *listener) Close() error {
	l.s.closedByUser.Store(true)
	l.u.closing.RLock()
	err := l.Listener.Close()
	l.u.closing.RUnlock()
	l.once.Do(func() { l.u.release(l.s) })
	if l.s.closedByUpgrader.Load() {
		return nil
	}
	return err
}

// SetDeadline sets the deadline of the underlying TCP or Unix listener.
// Once a hand-off or Shutdown closed the listener it fails with
// net.ErrClosed: a new deadline would let Accept wait again on a socket
// that the next generation serves.
func (l *listener) SetDeadline(t time.Time) error {
	if l.s.closedByUpgrader.Load() {
		return l.closedError("set")
	}
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return syscall.EINVAL
}

// closedError is what op on a closed listener returns, in net's words.
func (l *listener) closedError(op string) error {
	addr := l.Addr()
	return &net.OpError{Op: op, Net: addr.Network(), Addr: addr, Err: net.ErrClosed}
}

// SyscallConn gives access to the underlying socket.
func (l *listener) SyscallConn() (syscall.RawConn, error) {
	return l.s.raw.SyscallConn()
}

// trackedConn is the registry's record of an accepted connection that
// Shutdown waits for. The connection handed to the user is a wrapper
// around the real one that closes through it (see track).
type trackedConn struct {
	net.Conn // the real connection
	u        *Upgrader
	name     string // the listener it came from
	closed   atomic.Bool
	// What the previous generation's handler left, for Resumed; set
	// before the connection reaches a handler.
	resumed       bool
	unread, state []byte
	// Its place in the registry's connSet, under u.mu.
	prev, next *trackedConn
	listed     bool
}

// connSet is the connections the registry tracks: a doubly linked list
// through their records, so that adding and removing one costs no
// hashing and no allocation (a map's insert and delete were about 1% of a
// tracked accept and close, bench/RESULTS.md). u.mu guards it.
type connSet struct {
	first *trackedConn
	n     int
}

func (s *connSet) add(c *trackedConn) {
	c.prev, c.next, c.listed = nil, s.first, true
	if s.first != nil {
		s.first.prev = c
	}
	s.first = c
	s.n++
}

// remove takes c out of s, and reports whether it was in.
func (s *connSet) remove(c *trackedConn) bool {
	if !c.listed {
		return false
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.first = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
	s.n--
	return true
}

// len is the number of connections in s.
func (s *connSet) len() int { return s.n }

// all lists the connections in s.
func (s *connSet) all() []*trackedConn {
	out := make([]*trackedConn, 0, s.n)
	for c := s.first; c != nil; c = c.next {
		out = append(out, c)
	}
	return out
}

// trackedOf is the record of a connection a registry listener handed
// out, nil for any other.
func trackedOf(c net.Conn) *trackedConn {
	switch v := c.(type) {
	case *tcpConn:
		return v.t
	case *unixConn:
		return v.t
	case *otherConn:
		return v.t
	}
	return nil
}

// closeTracked closes the connection; first reports whether this call is
// the one that stopped tracking it.
func (c *trackedConn) closeTracked() (err error, first bool) {
	first = c.closed.CompareAndSwap(false, true) // before Close wakes the handler, which closes too
	err = c.Conn.Close()
	if first {
		c.u.untrack(c)
	}
	return err, first
}

// tcpConn is what Accept returns for TCP: the real *net.TCPConn with all
// its methods (SetKeepAlive, SetNoDelay, SetLinger, CloseRead, CloseWrite,
// SyscallConn, and ReadFrom and WriteTo, which reach sendfile(2) and
// splice(2)), and a Close that also stops tracking it.
type tcpConn struct {
	*net.TCPConn
	t *trackedConn
}

// Close closes the connection and stops tracking it.
func (c *tcpConn) Close() error {
	err, _ := c.t.closeTracked()
	return err
}

// ReadFrom is (*net.TCPConn).ReadFrom, with a tracked source (also
// inside an *io.LimitedReader, as io.CopyN makes it) seen as the real
// connection it wraps, so that a TCP-to-TCP copy can splice.
func (c *tcpConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if inner := realReader(lr.R); inner != lr.R {
			l := &io.LimitedReader{R: inner, N: lr.N}
			n, err := c.TCPConn.ReadFrom(l)
			lr.N = l.N
			return n, err
		}
	}
	return c.TCPConn.ReadFrom(realReader(r))
}

// WriteTo is (*net.TCPConn).WriteTo, with a tracked destination seen as
// the real connection.
func (c *tcpConn) WriteTo(w io.Writer) (int64, error) { return c.TCPConn.WriteTo(realWriter(w)) }

// unixConn is tcpConn for Unix stream connections.
type unixConn struct {
	*net.UnixConn
	t *trackedConn
}

// Close closes the connection and stops tracking it.
func (c *unixConn) Close() error {
	err, _ := c.t.closeTracked()
	return err
}

// otherConn wraps a connection of any other type (a listener the user's
// code wrapped, say).
type otherConn struct {
	net.Conn
	t *trackedConn
}

// Close closes the connection and stops tracking it.
func (c *otherConn) Close() error {
	err, _ := c.t.closeTracked()
	return err
}

// realReader unwraps a tracked connection so that the kernel's copy
// paths recognise it.
func realReader(r io.Reader) io.Reader {
	switch v := r.(type) {
	case *tcpConn:
		return v.TCPConn
	case *unixConn:
		return v.UnixConn
	}
	return r
}

// realWriter unwraps a tracked connection.
func realWriter(w io.Writer) io.Writer {
	switch v := w.(type) {
	case *tcpConn:
		return v.TCPConn
	case *unixConn:
		return v.UnixConn
	}
	return w
}

// track records c, from the listener named name, and returns what the
// user gets: a wrapper that keeps the real connection's type-specific
// methods. The wrapper and the record are one allocation.
func (u *Upgrader) track(c net.Conn, name string) net.Conn {
	var tc *trackedConn
	var out net.Conn
	switch real := c.(type) {
	case *net.TCPConn:
		w := &struct {
			tcpConn
			t trackedConn
		}{}
		w.tcpConn = tcpConn{TCPConn: real, t: &w.t}
		tc, out = &w.t, &w.tcpConn
	case *net.UnixConn:
		w := &struct {
			unixConn
			t trackedConn
		}{}
		w.unixConn = unixConn{UnixConn: real, t: &w.t}
		tc, out = &w.t, &w.unixConn
	default:
		w := &struct {
			otherConn
			t trackedConn
		}{}
		w.otherConn = otherConn{Conn: c, t: &w.t}
		tc, out = &w.t, &w.otherConn
	}
	tc.Conn, tc.u, tc.name = c, u, name
	u.mu.Lock()
	u.conns.add(tc)
	u.accepted++
	u.mu.Unlock()
	return out
}

// Stats are connection counts for logs and metrics.
type Stats struct {
	Active      int    // connections accepted and not yet closed
	Accepted    uint64 // connections accepted since New, and those handed over by the previous generation
	Moved       uint64 // connections handed to the next generation
	ForceClosed uint64 // connections that closed after the drain deadline: cut by Shutdown or Close, or by the server Run or RunHTTP stops
}

// Stats returns the current connection counts. It never blocks for long.
func (u *Upgrader) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Stats{Active: u.conns.len(), Accepted: u.accepted, Moved: u.moved, ForceClosed: u.forceClosed}
}

// countMoved counts n connections handed to the next generation.
func (u *Upgrader) countMoved(n int) {
	u.mu.Lock()
	u.moved += uint64(n)
	u.mu.Unlock()
}

func (u *Upgrader) untrack(tc *trackedConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	// While serving, the drain's check is one nil check.
	if u.conns.remove(tc) && u.drainCtx != nil && u.drainCtx.Err() != nil {
		u.cutLate++
		u.forceClosed++
	}
	if u.conns.len() == 0 && u.connsDone != nil {
		close(u.connsDone)
		u.connsDone = nil
	}
}
