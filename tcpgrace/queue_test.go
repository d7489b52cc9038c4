//go:build linux

package tcpgrace

import (
	"bufio"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQueued: a listener with connections waiting to be accepted is
// queued until they are, and a closed one is not.
func TestQueued(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	assert.False(t, queued(ln), "nothing is queued yet")
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		conns = append(conns, c)
	}
	assert.True(t, queued(ln), "3 connections wait")
	for range conns {
		c, err := ln.Accept()
		require.NoError(t, err)
		c.Close()
	}
	assert.False(t, queued(ln), "all were accepted")
	assert.False(t, queued(struct{}{}), "no socket: cannot tell")
	require.NoError(t, ln.Close())
	assert.False(t, queued(ln), "a closed listener has no queue")
}

// slowListener makes its accept goroutine start only when the test opens
// start; it keeps the listener's SyscallConn, as Listen's listeners have.
type slowListener struct {
	net.Listener
	start chan struct{}
}

func (s *slowListener) Accept() (net.Conn, error) {
	<-s.start
	return s.Listener.Accept()
}

func (s *slowListener) SyscallConn() (syscall.RawConn, error) {
	return s.Listener.(syscall.Conn).SyscallConn()
}

// TestServeDrainAcceptsQueued is the regression test for connections
// reset by a stop: Serve closed its listeners with connections still in
// the kernel's accept queue. Connections queued when Serve's context ends
// are accepted and served before the listener closes.
func TestServeDrainAcceptsQueued(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	sl := &slowListener{Listener: ln, start: make(chan struct{})}
	h := &echoHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveInBackground(ctx, &Server{Upgrader: u, Handler: h.serve, DrainTimeout: 10 * time.Second}, sl)
	const n = 20
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		conns = append(conns, c)
	}
	require.True(t, queued(ln), "the connections wait in the accept queue")
	cancel()
	close(sl.start) // accepting begins as Serve starts to drain
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(ioTimeout))
		_, err := io.WriteString(c, "queued\n")
		require.NoError(t, err)
		got, err := bufio.NewReader(c).ReadString('\n')
		assert.NoError(t, err, "connection %d, queued at the stop, is served", i)
		assert.Equal(t, "queued\n", got)
		c.Close()
	}
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.EqualValues(t, n, h.conns.Load(), "every queued connection was handled")
}
