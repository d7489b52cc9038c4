package wire

import (
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestOpenClosesInheritedRun: sockets inherited as a run of consecutive
// fds, as an exec'd hand-off's are, are closed in one close_range once
// net holds its duplicates; the fds just below and just above the run,
// which are not the entries', stay open. Every socket is made, and held
// by the test and its listener alone.
func TestOpenClosesInheritedRun(t *testing.T) {
	const n, base = 24, 700
	below := dupAt(t, pipeEnd(t), base)
	var lns []net.Listener
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: -1}
	for i := range n {
		ln := listenTCP(t, "tcp", "127.0.0.1:0")
		lns = append(lns, ln)
		env.Entries = append(env.Entries, Entry{Name: fmt.Sprintf("l%d", i), FD: dupAt(t, socketFD(t, ln.(syscall.Conn)), below+1),
			Network: "tcp", Address: ln.Addr().String()})
	}
	first, last := env.Entries[0].FD, env.Entries[n-1].FD
	require.Equal(t, n-1, last-first, "the entries' fds are a run")
	require.Equal(t, below+1, first, "the run starts just above the pipe's end")
	above := dupAt(t, pipeEnd(t), last+1)
	require.Equal(t, last+1, above, "the other pipe's end is just above the run")

	f := openFiles(t, env)
	assertOpen(t, below, "the fd below the run, no entry's")
	assertOpen(t, above, "the fd above the run, no entry's")
	for i, en := range env.Entries {
		var st unix.Stat_t
		assert.ErrorIs(t, unix.Fstat(en.FD, &st), unix.EBADF, "inherited fd %d of l%d is closed", en.FD, i)
		ln, err := f.Listener(en.Name, "tcp", en.Address)
		require.NoError(t, err, "claiming %s", en.Name)
		require.NotNil(t, ln, "%s was inherited", en.Name)
		t.Cleanup(func() { ln.Close() })
		assert.Len(t, socketFDs(t, lns[i].(syscall.Conn)), 2, "%s: held by the test and by its listener", en.Name)
		if i == 0 || i == n-1 {
			assertServes(t, ln)
		}
	}
}

// pipeEnd is the read end of a new pipe, closed at the test's end.
func pipeEnd(t *testing.T) int {
	t.Helper()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC), "making a pipe")
	closeOnCleanup(t, p[0], p[1])
	return p[0]
}

// socketFD is the fd of c, for dupAt.
func socketFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, rc.Control(func(s uintptr) { fd = int(s) }))
	return fd
}

// dupAt duplicates fd, close-on-exec, at the lowest free number from
// lowest on.
func dupAt(t *testing.T, fd, lowest int) int {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, lowest)
	require.NoError(t, err, "duplicating fd %d at %d or above", fd, lowest)
	return d
}

func assertOpen(t *testing.T, fd int, what string) {
	t.Helper()
	var st unix.Stat_t
	if assert.NoError(t, unix.Fstat(fd, &st), "%s (fd %d) is open", what, fd) {
		t.Cleanup(func() { unix.Close(fd) })
	}
}
