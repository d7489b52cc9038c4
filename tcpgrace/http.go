package tcpgrace

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// RunHTTP is [Server.Run] for a net/http server: it serves hs on
// listeners (from the Upgrader) until this generation must leave, then
// drains hs so that no client sees a failed request, including clients
// that never retry.
//
// The drain keeps every HTTP/1.x connection open and keeps serving the
// requests that arrive on it. Each response sent from then on carries
// "Connection: close", and the server closes the connection after it, so
// the client's next request opens a new connection, which reaches the
// next generation. A connection that sends nothing for [Server.IdleGrace]
// (the clock starts at its last response, or at its accept) is closed by
// this generation. Closing it races with a request the client may send at
// that very moment; only such a client can see an error. At the drain
// deadline the remaining connections are closed. hs.Shutdown is called
// only once no HTTP/1.x connection is left, because a request read after
// Shutdown began is dropped without an answer. HTTP/2 connections over
// TLS are then drained by Shutdown's GOAWAY.
//
// RunHTTP wraps hs.Handler and hs.ConnState (the previous ones still
// run), so hs must not be shared with another RunHTTP. It returns what
// Run returns; the servers' closed-listener and ErrServerClosed results
// count as a normal end.
func (s *Server) RunHTTP(ctx context.Context, hs *http.Server, listeners ...net.Listener) error {
	if hs == nil || len(listeners) == 0 {
		return errors.New("tcpgrace: RunHTTP needs an http.Server and at least one listener")
	}
	d := newHTTPDrain(hs, s.idleGrace(), s.Upgrader)
	listeners = d.wrap(listeners)
	served := make(chan struct{})
	return s.Run(ctx, func() error {
		defer close(served)
		return serveAll(hs, listeners)
	}, func(ctx context.Context) error {
		return d.drain(ctx, listeners, served)
	})
}

func (s *Server) idleGrace() time.Duration {
	if s.IdleGrace > 0 {
		return s.IdleGrace
	}
	return DefaultIdleGrace
}

// serveAll runs hs.Serve on every listener and returns when all have
// returned: nil if each ended because its listener closed, else the first
// other error.
func serveAll(hs *http.Server, listeners []net.Listener) error {
	errs := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { errs <- hs.Serve(ln) }()
	}
	var first error
	for range listeners {
		err := <-errs
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			continue
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// httpDrain follows the state of every connection of one http.Server.
type httpDrain struct {
	hs       *http.Server
	u        *Upgrader
	grace    time.Duration
	draining atomic.Bool
	handing  atomic.Bool  // idle connections move to the next generation (httpmove.go)
	parking  atomic.Bool  // idle Reads park, for the next move
	waking   atomic.Int64 // idle Reads woken to park that have not parked yet
	// moveBegan is when startMoving began (the drain goroutine's only).
	moveBegan time.Time
	changed   chan struct{} // a connection changed state or parked: look again

	mu    sync.Mutex
	conns map[net.Conn]httpConn
}

// httpConn is the last state net/http reported for a connection, and when.
type httpConn struct {
	state http.ConnState
	since time.Time
	h2    bool // a TLS connection that negotiated HTTP/2
}

func newHTTPDrain(hs *http.Server, grace time.Duration, u *Upgrader) *httpDrain {
	d := &httpDrain{hs: hs, u: u, grace: grace, changed: make(chan struct{}, 1), conns: map[net.Conn]httpConn{}}
	inner := hs.Handler
	if inner == nil {
		inner = http.DefaultServeMux
	}
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() && r.ProtoMajor == 1 && !(d.handing.Load() && r.Context().Value(moveKey{}) != nil) {
			w.Header().Set("Connection", "close") // the client reconnects, to the next generation
		}
		inner.ServeHTTP(w, r)
	})
	hook := hs.ConnState
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		d.setState(c, st)
		if hook != nil {
			hook(c, st)
		}
	}
	connCtx := hs.ConnContext
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connCtx != nil {
			ctx = connCtx(ctx, c)
		}
		if _, ok := c.(*moveConn); ok {
			ctx = context.WithValue(ctx, moveKey{}, true)
		}
		return ctx
	}
	return d
}

// idleTimeout is how long net/http waits for an idle connection's next
// request: IdleTimeout, or ReadTimeout without one, or for ever.
func (d *httpDrain) idleTimeout() time.Duration {
	if d.hs.IdleTimeout > 0 {
		return d.hs.IdleTimeout
	}
	return d.hs.ReadTimeout
}

// poke tells the drain to look again.
func (d *httpDrain) poke() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *httpDrain) setState(c net.Conn, st http.ConnState) {
	if mc, ok := c.(*moveConn); ok && (st == http.StateIdle || st == http.StateNew) {
		mc.fresh = true // on the goroutine that reads it next (StateNew: before it starts)
	}
	// Past StateNew a TLS handshake is over, and ConnectionState, which
	// waits for one in progress, returns at once: asked under d.mu, a
	// client that never finishes its handshake would stall every
	// connection's state change.
	h2 := st != http.StateNew && isHTTP2(c)
	d.mu.Lock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(d.conns, c) // hijacked ones are the handler's; the Upgrader still waits for them
	default:
		d.conns[c] = httpConn{state: st, since: time.Now(), h2: h2}
	}
	d.mu.Unlock()
	d.poke()
}

// drain stops accepting and waits until hs.Serve has returned on every
// listener (so every accepted connection is known), then waits for the
// HTTP/1.x connections as RunHTTP describes, closing idle ones after the
// grace; then it shuts hs down for what is left (HTTP/2), hard at ctx's
// end.
func (d *httpDrain) drain(ctx context.Context, listeners []net.Listener, served <-chan struct{}) error {
	handing := d.startMoving()
	d.draining.Store(true)
	for _, ln := range listeners {
		ln.Close() // already closed after an upgrade; on a stop, no new connections
	}
	select {
	case <-served:
	case <-ctx.Done():
		d.hs.Close()
		return ctx.Err()
	}
	for {
		if handing {
			handing = d.moveParked(ctx)
		}
		left, wake := d.closeIdle(time.Now(), handing)
		if left == 0 {
			break
		}
		timer := time.NewTimer(wake)
		select {
		case <-ctx.Done():
			timer.Stop()
			d.hs.Close()
			return ctx.Err()
		case <-d.changed:
		case <-timer.C:
		}
		timer.Stop()
	}
	if err := d.hs.Shutdown(ctx); err != nil {
		d.hs.Close()
		return err
	}
	return nil
}

// closeIdle closes the connections idle (or new and silent) for the
// grace; one with bytes waiting to be read is not idle: a request is
// arriving. It returns how many HTTP/1.x connections are left and when
// the next one may reach the grace.
func (d *httpDrain) closeIdle(now time.Time, handing bool) (left int, wake time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wake = d.grace
	for c, st := range d.conns {
		if st.h2 {
			continue
		}
		if mc, ok := c.(*moveConn); ok && handing && mc.isParked() {
			left++ // the next move takes it
			continue
		}
		left++
		if st.state != http.StateIdle && st.state != http.StateNew {
			continue
		}
		idle := now.Sub(st.since)
		if idle >= d.grace && unreadBytes(c) > 0 {
			d.conns[c] = httpConn{state: st.state, since: now, h2: st.h2}
			continue
		}
		if idle >= d.grace {
			c.Close()
			delete(d.conns, c)
			left--
			continue
		}
		wake = min(wake, d.grace-idle)
	}
	return left, wake
}

// isHTTP2 reports a TLS connection that negotiated HTTP/2: net/http
// reports it active for its whole life, and Shutdown drains it.
func isHTTP2(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}
