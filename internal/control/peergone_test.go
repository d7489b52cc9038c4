//go:build linux

package control

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeerGone: a client that closed its connection is gone, one that is
// still there or only shut down its writing half (it waits for the reply)
// is not; a request it sent before it left is still readable.
func TestPeerGone(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "c.sock"))
	require.NoError(t, err)
	defer ln.Close()
	accept := func(client func(c *net.UnixConn)) net.Conn {
		c, err := net.Dial("unix", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		client(c.(*net.UnixConn))
		return s
	}
	assert.False(t, PeerGone(accept(func(c *net.UnixConn) {})), "a client still there")
	assert.False(t, PeerGone(accept(func(c *net.UnixConn) { c.CloseWrite() })), "a client that waits for the reply")
	s := accept(func(c *net.UnixConn) { c.Write([]byte("x\n")); c.Close() })
	assert.True(t, PeerGone(s), "a client that closed")
	s.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 2)
	n, _ := s.Read(b)
	assert.Equal(t, "x\n", string(b[:n]), "what it sent is still there")
}
