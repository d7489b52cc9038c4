//go:build linux

package tcpgrace

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestReadyLateErrorIsIncomplete: an error Ready meets after it told the
// parent (an unclaimed inherited socket that will not close) wraps
// ErrReadyIncomplete: the parent heard "ready" and hands over, so the
// caller must keep serving. Before, it was a plain error, and the
// examples exited on it, leaving nobody serving.
func TestReadyLateErrorIsIncomplete(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	old, err := parent.Listen("old", "tcp", loopback)
	require.NoError(t, err)
	child, r := inheritedChild(t, Options{}, &wire.Env{Source: wire.EnvFDs, Generation: 2}, "old", "tcp", old.Addr().String(), old.(syscall.Conn))
	require.Len(t, child.inh.Unclaimed(), 1, "the child left old unclaimed")
	fd := otherFD(t, old.(syscall.Conn))
	require.NoError(t, unix.Close(fd), "closing the unclaimed socket behind the registry's back")
	err = child.Ready()
	require.Error(t, err, "closing the unclaimed socket again fails")
	assert.ErrorIs(t, err, ErrReadyIncomplete, "the error says this generation serves all the same")
	msg := make([]byte, 1)
	_, err = io.ReadFull(r, msg) // one byte: the child keeps the pipe open after it
	require.NoError(t, err)
	assert.Equal(t, "R", string(msg), "the parent heard ready")
}

// otherFD is the one fd of this process, other than c's own, that refers
// to the socket behind c: the copy an inherited registry made of it.
func otherFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var own int
	var target string
	require.NoError(t, rc.Control(func(fd uintptr) {
		own = int(fd)
		target, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	}))
	require.NoError(t, err, "reading the socket's inode")
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var others []int
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && link == target && fd != own {
			others = append(others, fd)
		}
	}
	require.Len(t, others, 1, "one other fd refers to the socket")
	return others[0]
}

// TestReadyEarlyErrorIsNotIncomplete: a child whose pid file cannot be
// written has not told its parent ready: its error does not wrap
// ErrReadyIncomplete, so the caller exits and the parent keeps serving.
// A first generation in the same case serves alone: its error wraps it.
func TestReadyEarlyErrorIsNotIncomplete(t *testing.T) {
	parent := newColdUpgrader(t, Options{})
	ln, err := parent.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	missing := Options{PIDFile: filepath.Join(t.TempDir(), "missing", "x.pid")}
	child, _ := inheritedChild(t, missing, &wire.Env{Source: wire.EnvFDs, Generation: 2}, "web", "tcp", ln.Addr().String(), ln.(syscall.Conn))
	err = child.Ready()
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrReadyIncomplete, "a child that failed before telling its parent must exit")

	first := newColdUpgrader(t, missing)
	err = first.Ready()
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrReadyIncomplete, "a first generation serves without its pid file")
}
