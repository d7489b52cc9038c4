//go:build linux

package tcpgrace

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoHandler echoes lines until the peer closes; it counts the
// connections it saw and records whether their context was cancelled.
type echoHandler struct {
	conns     atomic.Int64
	cancelled atomic.Int64
}

func (h *echoHandler) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	h.conns.Add(1)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break
		}
		c.Write(line)
	}
	if ctx.Err() != nil {
		h.cancelled.Add(1)
	}
}

func echo(t *testing.T, addr, line string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err, "dialing %s", addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.WriteString(c, line+"\n")
	require.NoError(t, err)
	got, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "reading the echo")
	assert.Equal(t, line+"\n", got, "the echo")
}

// serveInBackground runs srv.Serve and returns its result channel.
func serveInBackground(ctx context.Context, srv *Server, lns ...net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lns...) }()
	return done
}

func TestServeRequiresUpgraderHandlerListener(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	h := &echoHandler{}
	for _, srv := range []*Server{{Handler: h.serve}, {Upgrader: u}} {
		assert.Error(t, srv.Serve(context.Background(), ln), "Serve without an Upgrader or a Handler")
	}
	assert.Error(t, (&Server{Upgrader: u, Handler: h.serve}).Serve(context.Background()), "Serve without listeners")
}

// TestServeContextDrains: Serve serves every listener until its context
// ends, then tells the handlers (their context is cancelled), waits for
// them within DrainTimeout and returns the context's error.
func TestServeContextDrains(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	web, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	api, err := u.Listen("api", "tcp", loopback)
	require.NoError(t, err)
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve, DrainTimeout: 5 * time.Second}, web, api)
	echo(t, web.Addr().String(), "web")
	echo(t, api.Addr().String(), "api")

	held, err := net.Dial("tcp", web.Addr().String()) // open across the drain
	require.NoError(t, err)
	waitUntil(t, "the held connection to be served", func() bool { return h.conns.Load() == 3 })
	cancel()
	<-u.Exit() // closed by Shutdown, after the listeners
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v while a connection was open", err)
	case <-time.After(100 * time.Millisecond):
	}
	if c, err := net.Dial("tcp", web.Addr().String()); err == nil {
		c.Close()
		t.Error("still accepting while draining")
	}
	held.Close()
	assert.ErrorIs(t, <-done, context.Canceled, "Serve returns its context's error")
	assert.EqualValues(t, 1, h.cancelled.Load(), "the held connection's handler saw the drain")
	assert.Equal(t, 0, u.Stats().Active)
}

// TestServeDrainDeadline: a connection that never ends is cut at the
// drain deadline, and Serve reports it.
func TestServeDrainDeadline(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve, DrainTimeout: 200 * time.Millisecond}, ln)
	held, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer held.Close()
	waitUntil(t, "the connection to be served", func() bool { return h.conns.Load() == 1 })
	cancel()
	err = <-done
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the drain deadline passed")
	assert.ErrorContains(t, err, "1 connection still open")
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = held.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the connection was closed at the deadline")
	assert.EqualValues(t, 1, u.Stats().ForceClosed)
}

// gateListener holds each accepted connection until the test lets it go,
// so a connection can be accepted but not yet handed to Serve's loop.
type gateListener struct {
	net.Listener
	took   chan struct{} // a connection was accepted and is held
	gate   chan struct{} // closed: hand it over
	closed chan struct{} // closed by Close: the loop is draining
	once   sync.Once
}

func (g *gateListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

func (g *gateListener) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g.took <- struct{}{}
	<-g.gate
	return c, nil
}

// TestServeDrainServesAcceptedConnections is the regression test for a
// hang: a connection accepted while Serve began draining sat in the accept
// goroutine, never handled, and the generation waited for it until the
// drain deadline. An accepted connection is out of the kernel's queue; it
// must be served.
func TestServeDrainServesAcceptedConnections(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	g := &gateListener{Listener: ln, took: make(chan struct{}, 1), gate: make(chan struct{}), closed: make(chan struct{})}
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve, DrainTimeout: time.Minute}, g)

	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	<-g.took
	cancel()
	<-g.closed // the loop drains while the gate still holds the connection
	close(g.gate)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.WriteString(c, "late\n")
	require.NoError(t, err)
	got, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "the connection accepted during the drain is served")
	assert.Equal(t, "late\n", got)
	c.Close()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its last connection closed")
	}
}

// flakyListener fails Accept with a temporary error n times first.
type flakyListener struct {
	net.Listener
	fails atomic.Int64
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// TestServeBacksOffOnTemporaryErrors: EMFILE from accept does not end the
// loop; serving resumes after the back-off.
func TestServeBacksOffOnTemporaryErrors(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	f := &flakyListener{Listener: ln}
	f.fails.Store(4) // 5+10+20+40 ms of back-off
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve}, f)
	echo(t, ln.Addr().String(), "after EMFILE")
	assert.LessOrEqual(t, f.fails.Load(), int64(-1), "every injected error was returned before the connection")
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

// TestServeSignals: with a signal channel, SIGHUP runs the reload hook
// (its error is logged, serving goes on) and SIGTERM drains and returns
// nil. Real signals to this process: signal.Notify keeps them from
// killing it.
func TestServeSignals(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	defer signal.Stop(sigs)
	reloads := make(chan struct{}, 2)
	reload := func() error {
		reloads <- struct{}{}
		if len(reloads) == 2 {
			return errors.New("bad config")
		}
		return nil
	}
	h := &echoHandler{}
	done := serveInBackground(context.Background(), &Server{Upgrader: u, Handler: h.serve, Signals: sigs, Reload: reload}, ln)
	for i := range 2 {
		require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
		select {
		case <-reloads:
		case <-time.After(5 * time.Second):
			t.Fatalf("reload %d did not run", i)
		}
		echo(t, ln.Addr().String(), "after reload")
	}
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case err := <-done:
		assert.NoError(t, err, "a stop signal drains and returns nil")
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop Serve")
	}
	_, err = net.Dial("tcp", ln.Addr().String())
	assert.Error(t, err, "the listener is closed after the stop")
}

// TestServeSIGHUPWithoutHook: without a reload hook SIGHUP changes
// nothing.
func TestServeSIGHUPWithoutHook(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	sigs := make(chan os.Signal, 1)
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve, Signals: sigs}, ln)
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGHUP // the first one has been taken once this send completes
	echo(t, ln.Addr().String(), "still serving")
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

// waitUntil polls cond every millisecond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
