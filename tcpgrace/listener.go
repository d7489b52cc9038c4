package tcpgrace

import (
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
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.u.track(c), nil
}

// Close closes the listener; see Upgrader.Listen for what is released.
// Closing a listener that the Upgrader already closed (after an upgrade or
// in Shutdown) returns nil, so servers such as http.Server that close
// their listeners on shutdown see no spurious error.
func (l *listener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.u.release(l.s) })
	if l.s.closedByUpgrader.Load() {
		return nil
	}
	return err
}

// SetDeadline sets the deadline of the underlying TCP or Unix listener.
func (l *listener) SetDeadline(t time.Time) error {
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return syscall.EINVAL
}

// SyscallConn gives access to the underlying socket.
func (l *listener) SyscallConn() (syscall.RawConn, error) {
	return l.s.raw.SyscallConn()
}

// trackedConn is an accepted connection that Shutdown waits for.
type trackedConn struct {
	net.Conn
	u      *Upgrader
	closed atomic.Bool
}

// Close closes the connection and stops tracking it.
func (c *trackedConn) Close() error {
	err, _ := c.closeTracked()
	return err
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

// CloseWrite shuts down the writing side, as *net.TCPConn does.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return syscall.EINVAL
}

// SyscallConn gives access to the underlying socket.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

func (u *Upgrader) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, u: u}
	u.mu.Lock()
	u.conns[tc] = struct{}{}
	u.accepted++
	u.mu.Unlock()
	return tc
}

// Stats are connection counts for logs and metrics.
type Stats struct {
	Active      int    // connections accepted and not yet closed
	Accepted    uint64 // connections accepted since New
	ForceClosed uint64 // connections closed by Shutdown or Close at the drain deadline
}

// Stats returns the current connection counts. It never blocks for long.
func (u *Upgrader) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Stats{Active: len(u.conns), Accepted: u.accepted, ForceClosed: u.forceClosed}
}

func (u *Upgrader) untrack(tc *trackedConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.conns, tc)
	if len(u.conns) == 0 && u.connsDone != nil {
		close(u.connsDone)
		u.connsDone = nil
	}
}
