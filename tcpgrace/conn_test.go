//go:build linux

package tcpgrace

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// acceptPair returns a connection accepted through a registry listener on
// network and the client's end of it.
func acceptPair(t *testing.T, u *Upgrader, network, address string) (server, client net.Conn) {
	t.Helper()
	ln, err := u.Listen("pair-"+network, network, address)
	require.NoError(t, err)
	client, err = net.Dial(network, ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { server.Close() })
	return server, client
}

// TestAcceptedTCPConnKeepsItsMethods: a tracked TCP connection still
// offers what *net.TCPConn does, which net/http and proxies look for.
// Before, the tracking wrapper hid all but CloseWrite and SyscallConn.
func TestAcceptedTCPConnKeepsItsMethods(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	c, _ := acceptPair(t, u, "tcp", loopback)
	tcp, ok := c.(interface {
		SetKeepAlive(bool) error
		SetKeepAlivePeriod(time.Duration) error
		SetNoDelay(bool) error
		SetLinger(int) error
		CloseRead() error
		CloseWrite() error
		io.ReaderFrom
		io.WriterTo
		syscall.Conn
	})
	require.True(t, ok, "an accepted TCP connection has *net.TCPConn's methods, got %T", c)
	assert.NoError(t, tcp.SetKeepAlive(true))
	assert.NoError(t, tcp.SetNoDelay(false))
	assert.NoError(t, tcp.SetLinger(0))
	assert.Equal(t, 1, u.Stats().Active)
	require.NoError(t, c.Close())
	assert.Zero(t, u.Stats().Active, "Close stops tracking it")
}

// TestAcceptedUnixConnKeepsItsMethods: the same for Unix connections.
func TestAcceptedUnixConnKeepsItsMethods(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	c, _ := acceptPair(t, u, "unix", filepath.Join(t.TempDir(), "s.sock"))
	unixc, ok := c.(interface {
		CloseRead() error
		CloseWrite() error
		syscall.Conn
	})
	require.True(t, ok, "an accepted Unix connection has *net.UnixConn's methods, got %T", c)
	assert.NoError(t, unixc.CloseWrite())
}

// TestSendfileThroughTrackedConn: io.CopyN from a file to a tracked TCP
// connection, as net/http serves a static file, takes the kernel's path
// (sendfile): the sending thread issues a handful of read-type system
// calls for 16 MiB, where a copy through a user-space buffer needs one
// read(2) per 32 KiB, 512 of them. The counts are the thread's own
// (/proc/thread-self/io), so the receiver's reads do not count. Before,
// the tracking wrapper hid ReadFrom and the copy went through a buffer.
func TestSendfileThroughTrackedConn(t *testing.T) {
	const size = 16 << 20
	path := filepath.Join(t.TempDir(), "payload")
	require.NoError(t, os.WriteFile(path, make([]byte, size), 0o644))
	u := newColdUpgrader(t, Options{})
	c, client := acceptPair(t, u, "tcp", loopback)
	received := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, client)
		received <- n
	}()
	reads := sendCounting(t, path, c)
	c.Close()
	assert.EqualValues(t, size, <-received, "every byte arrives")
	t.Logf("read-type system calls of the sending thread for %d MiB: %d", size>>20, reads)
	assert.Less(t, reads, int64(size/(32<<10)/4), "far fewer reads than a copy through a buffer: the kernel copied the file")

	// The same copy through a wrapper that hides ReadFrom, as the
	// registry's did: the control, which must read through a buffer.
	c, client = acceptPair(t, newColdUpgrader(t, Options{}), "tcp", loopback)
	go func() {
		n, _ := io.Copy(io.Discard, client)
		received <- n
	}()
	hidden := sendCounting(t, path, struct{ net.Conn }{c})
	c.Close()
	<-received
	assert.GreaterOrEqual(t, hidden, int64(size/(32<<10)), "the control copies through a buffer")
}

// sendCounting copies the file at path to w on one locked OS thread and
// returns how many read-type system calls that thread made meanwhile.
func sendCounting(t *testing.T, path string, w io.Writer) int64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	before := threadSyscr(t)
	_, err = io.CopyN(w, f, fi.Size()) // a LimitedReader, which has no WriteTo: w's ReadFrom decides
	require.NoError(t, err)
	return threadSyscr(t) - before
}

// TestSpliceBetweenTrackedConns: a proxy's io.CopyN from one tracked TCP
// connection to another moves the bytes in the kernel (splice): the
// proxy thread issues few read-type system calls, where a buffered copy
// needs one per 32 KiB.
func TestSpliceBetweenTrackedConns(t *testing.T) {
	const size = 16 << 20
	u := newColdUpgrader(t, Options{})
	in, sender := acceptPair(t, u, "tcp", loopback)
	out, receiver := acceptPair(t, u, "tcp4", loopback)
	go func() {
		sender.Write(make([]byte, size))
		sender.Close()
	}()
	received := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, receiver)
		received <- n
	}()
	runtime.LockOSThread()
	before := threadSyscr(t)
	n, err := io.CopyN(out, in, size)
	reads := threadSyscr(t) - before
	runtime.UnlockOSThread()
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	out.Close()
	assert.EqualValues(t, size, <-received, "every byte arrives")
	t.Logf("read-type system calls of the proxy thread for %d MiB: %d", size>>20, reads)
	assert.Less(t, reads, int64(size/(32<<10)/4), "far fewer reads than a copy through a buffer: the kernel spliced")
}

// threadSyscr is the calling thread's read-type system call count.
func threadSyscr(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/thread-self/io")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "syscr: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no syscr in /proc/thread-self/io")
	return 0
}

// TestConnSet: connections leave the registry's set in any order (the
// newest, the oldest, one between), each once, and what is left is
// listed whole; a connection removed can be added again.
func TestConnSet(t *testing.T) {
	var s connSet
	conns := make([]*trackedConn, 6)
	for i := range conns {
		conns[i] = &trackedConn{name: strconv.Itoa(i)}
		s.add(conns[i])
	}
	listed := func() []string {
		var names []string
		for _, c := range s.all() {
			names = append(names, c.name)
		}
		return names
	}
	require.ElementsMatch(t, []string{"0", "1", "2", "3", "4", "5"}, listed())
	for _, step := range []struct {
		remove int
		left   []string
	}{
		{3, []string{"0", "1", "2", "4", "5"}}, // between
		{5, []string{"0", "1", "2", "4"}},      // the newest: the list's first
		{0, []string{"1", "2", "4"}},           // the oldest: the list's last
		{2, []string{"1", "4"}},
		{4, []string{"1"}},
		{1, nil},
	} {
		assert.True(t, s.remove(conns[step.remove]), "removing %d should find it", step.remove)
		assert.False(t, s.remove(conns[step.remove]), "removing %d twice should not find it", step.remove)
		assert.Equal(t, len(step.left), s.len(), "after removing %d", step.remove)
		assert.ElementsMatch(t, step.left, listed(), "after removing %d", step.remove)
	}
	s.add(conns[2])
	s.add(conns[4])
	assert.ElementsMatch(t, []string{"2", "4"}, listed(), "connections removed can be added again")
	assert.True(t, s.remove(conns[2]))
	assert.ElementsMatch(t, []string{"4"}, listed())
}
