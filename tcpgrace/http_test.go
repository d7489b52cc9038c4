//go:build linux

package tcpgrace

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runHTTP runs hs under Server.RunHTTP on a new listener and returns
// RunHTTP's result channel and the address.
func runHTTP(t *testing.T, srv *Server, hs *http.Server) (<-chan error, string) {
	t.Helper()
	ln, err := srv.Upgrader.Listen("http", "tcp", loopback)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.RunHTTP(context.Background(), hs, ln) }()
	return done, ln.Addr().String()
}

// rawHTTP is one client connection that sends requests by hand, so
// nothing retries behind the test's back.
type rawHTTP struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *rawHTTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawHTTP{c: c, r: bufio.NewReader(c)}
}

// get sends one GET and reads the response.
func (h *rawHTTP) get(path string) (*http.Response, string, error) {
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// eof reports whether the server closed the connection.
func (h *rawHTTP) eof() bool {
	_, err := h.r.ReadByte()
	return err == io.EOF
}

func okHandler(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }

// stateHook reports each connection that reached state on the channel.
func stateHook(state http.ConnState) (func(net.Conn, http.ConnState), <-chan struct{}) {
	ch := make(chan struct{}, 16)
	return func(_ net.Conn, st http.ConnState) {
		if st == state {
			ch <- struct{}{}
		}
	}, ch
}

// waitRefused waits until the listener at addr no longer accepts: the
// drain has begun.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	waitUntil(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// TestRunHTTPKeepAliveServedWhileDraining: a request that arrives on a
// kept-alive connection after the drain began is answered, with
// "Connection: close", and then the server closes that connection. Before
// RunHTTP, http.Server.Shutdown closed such a connection and the request
// was lost (a client that does not retry saw an error).
func TestRunHTTPKeepAliveServedWhileDraining(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sigs := make(chan os.Signal, 1)
	srv := &Server{Upgrader: u, Signals: sigs, DrainTimeout: 10 * time.Second, IdleGrace: 5 * time.Second}
	done, addr := runHTTP(t, srv, &http.Server{Handler: http.HandlerFunc(okHandler)})
	h := dialHTTP(t, addr)
	resp, body, err := h.get("/")
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	require.False(t, resp.Close, "before the drain the connection is kept alive")

	sigs <- syscall.SIGTERM
	waitRefused(t, addr)
	resp, body, err = h.get("/")
	require.NoError(t, err, "a request on a kept-alive connection during the drain is answered")
	assert.Equal(t, "ok", body)
	assert.True(t, resp.Close, "the answer says Connection: close")
	assert.True(t, h.eof(), "the server closes the connection after that answer")
	assert.NoError(t, <-done, "RunHTTP ends with nil after a stop signal")
}

// TestRunHTTPNewConnectionServedWhileDraining: a connection accepted
// before the drain began whose request arrives after it is answered.
// http.Server.Shutdown dropped such a request without an answer: the
// failures of connection-per-request clients during upgrades.
func TestRunHTTPNewConnectionServedWhileDraining(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sigs := make(chan os.Signal, 1)
	hook, accepted := stateHook(http.StateNew)
	srv := &Server{Upgrader: u, Signals: sigs, DrainTimeout: 10 * time.Second, IdleGrace: 5 * time.Second}
	done, addr := runHTTP(t, srv, &http.Server{Handler: http.HandlerFunc(okHandler), ConnState: hook})
	h := dialHTTP(t, addr)
	<-accepted // the server holds the connection; no request yet
	sigs <- syscall.SIGTERM
	waitRefused(t, addr)
	resp, body, err := h.get("/")
	require.NoError(t, err, "the first request of a connection accepted before the drain is answered")
	assert.Equal(t, "ok", body)
	assert.True(t, resp.Close, "with Connection: close")
	assert.NoError(t, <-done)
}

// TestRunHTTPIdleClosedAfterGrace: a kept-alive connection that sends
// nothing is closed after IdleGrace, and the drain ends then, long before
// its deadline.
func TestRunHTTPIdleClosedAfterGrace(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sigs := make(chan os.Signal, 1)
	srv := &Server{Upgrader: u, Signals: sigs, DrainTimeout: time.Minute, IdleGrace: 100 * time.Millisecond}
	done, addr := runHTTP(t, srv, &http.Server{Handler: http.HandlerFunc(okHandler)})
	h := dialHTTP(t, addr)
	_, _, err := h.get("/")
	require.NoError(t, err)
	sigs <- syscall.SIGTERM
	assert.True(t, h.eof(), "the idle connection is closed by the server")
	select {
	case err := <-done:
		assert.NoError(t, err, "the drain ended by itself")
	case <-time.After(30 * time.Second):
		t.Fatal("RunHTTP still draining although its only connection was idle past the grace")
	}
	assert.Zero(t, u.Stats().ForceClosed, "an idle connection closed after the grace is not a forced close")
}

// TestRunHTTPDrainDeadline: a request that outlives the drain deadline is
// cut there; RunHTTP returns the deadline's error.
func TestRunHTTPDrainDeadline(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sigs := make(chan os.Signal, 1)
	hook, active := stateHook(http.StateActive)
	stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := &Server{Upgrader: u, Signals: sigs, DrainTimeout: 200 * time.Millisecond}
	done, addr := runHTTP(t, srv, &http.Server{Handler: stuck, ConnState: hook})
	h := dialHTTP(t, addr)
	_, err := fmt.Fprintf(h.c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	require.NoError(t, err)
	<-active
	sigs <- syscall.SIGTERM
	assert.ErrorIs(t, <-done, context.DeadlineExceeded, "the drain deadline ends RunHTTP with its error")
	assert.True(t, h.eof(), "the stuck request's connection is closed at the deadline")
}

// TestRunHTTPHandlerAndHookChained: RunHTTP keeps the server's own
// ConnState hook and serves with DefaultServeMux when Handler is nil.
func TestRunHTTPHandlerAndHookChained(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	hook, closed := stateHook(http.StateClosed)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := u.Listen("http", "tcp", loopback)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- (&Server{Upgrader: u}).RunHTTP(ctx, &http.Server{ConnState: hook}, ln) }()
	h := dialHTTP(t, ln.Addr().String())
	resp, _, err := h.get("/no-such-path")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "DefaultServeMux answers")
	h.c.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's own ConnState hook never saw the connection close")
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Error(t, (&Server{Upgrader: u}).RunHTTP(ctx, nil), "RunHTTP without a server or listener")
}

// TestUnreadBytes: the drain's check for a request on its way sees the
// bytes waiting in a socket, through a tracked connection.
func TestUnreadBytes(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	assert.Zero(t, unreadBytes(s), "nothing sent yet")
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\n")
	require.NoError(t, err)
	waitUntil(t, "the bytes to arrive", func() bool { return unreadBytes(s) == len("GET / HTTP/1.1\r\n") })
}
