//go:build linux

package sdnotify

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fakeManager is a notify socket the test reads as systemd would.
func fakeManager(t *testing.T) (*net.UnixConn, *Sender) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err, "the manager's socket")
	s := NewSender(path)
	t.Cleanup(func() {
		mgr.Close()
		s.Close()
	})
	return mgr, s
}

// readMessage reads one message and the fds that came with it.
func readMessage(t *testing.T, mgr *net.UnixConn) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*MaxFDs))
	n, oobn, _, _, err := mgr.ReadMsgUnix(buf, oob)
	require.NoError(t, err, "reading a message")
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err, "the control messages")
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		require.NoError(t, err, "SCM_RIGHTS")
		fds = append(fds, got...)
	}
	return string(buf[:n]), fds
}

// sameFile reports whether fds a and b are one open file (inode).
func sameFile(t *testing.T, a, b int) bool {
	var sa, sb unix.Stat_t
	require.NoError(t, unix.Fstat(a, &sa))
	require.NoError(t, unix.Fstat(b, &sb))
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// TestStore: Store sends FDSTORE=1 and FDNAME= with the fds in one
// message, and keeps its own fds open; Remove sends FDSTOREREMOVE=1 and
// FDNAME=; neither sends anything under a name systemd would ignore.
func TestStore(t *testing.T) {
	mgr, s := fakeManager(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	defer f.Close()
	name, err := FDName("tcp:" + ln.Addr().String())
	require.NoError(t, err)

	require.NoError(t, s.Store(name, int(f.Fd())), "storing a socket")
	msg, fds := readMessage(t, mgr)
	assert.Equal(t, "FDSTORE=1\nFDNAME="+name+"\n", msg, "the message names the fd")
	require.Len(t, fds, 1, "one fd with it")
	assert.True(t, sameFile(t, fds[0], int(f.Fd())), "the fd is the socket's")
	unix.Close(fds[0])
	_, err = unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	assert.NoError(t, err, "the sender's fd stays open")

	require.NoError(t, s.Remove(name), "removing it")
	msg, fds = readMessage(t, mgr)
	assert.Equal(t, "FDSTOREREMOVE=1\nFDNAME="+name+"\n", msg)
	assert.Empty(t, fds)

	for _, bad := range []string{"", "tcp:127.0.0.1:1", "tab\t", strings.Repeat("a", 256), "é"} {
		assert.Error(t, s.Store(bad, int(f.Fd())), "FDNAME %q is refused", bad)
		assert.Error(t, s.Remove(bad), "FDNAME %q is refused", bad)
	}
	assert.ErrorContains(t, s.Store("x"), "without an fd")
	mgr.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, _, _, _, err = mgr.ReadMsgUnix(make([]byte, 16), nil)
	assert.Error(t, err, "nothing was sent for the refused names")

	var nilSender *Sender
	assert.NoError(t, nilSender.Store(name, int(f.Fd())), "a nil Sender stores nothing")
	assert.NoError(t, nilSender.Remove(name), "a nil Sender removes nothing")
}

// TestStoreNeverWaits: Store to a manager that reads nothing fails at
// once once its queue is full, names the socket, and counts the loss.
func TestStoreNeverWaits(t *testing.T) {
	path, s := stalledManager(t)
	r, w, err := osPipe()
	require.NoError(t, err)
	defer unix.Close(r)
	defer unix.Close(w)
	var failed error
	for i := 0; i < 10000 && failed == nil; i++ {
		within(t, fmt.Sprintf("message %d", i), func() { failed = s.Store("state", w) })
	}
	require.Error(t, failed, "the queue of a manager that reads nothing fills up")
	assert.Contains(t, failed.Error(), path, "the error names the socket")
	assert.Contains(t, failed.Error(), "fd store", "and what was lost")
	lost, due := s.warnDue(time.Now())
	assert.True(t, due)
	assert.Equal(t, 1, lost, "the lost message is counted")
}

// TestCheckFDName: what systemd's fdname_is_valid takes.
func TestCheckFDName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web": true, "tcp%3A127.0.0.1%3A80": true, "a b": true, "~": true, strings.Repeat("a", 255): true,
		"": false, "a:b": false, "a\nb": false, "\x7f": false, "é": false, strings.Repeat("a", 256): false,
	} {
		err := CheckFDName(name)
		assert.Equal(t, ok, err == nil, "%q: %v", name, err)
	}
	for _, name := range []string{"tcp:127.0.0.1:8080", "unix:/run/a b.sock", "100%", "é"} {
		m, err := FDName(name)
		require.NoError(t, err)
		assert.NoError(t, CheckFDName(m), "FDName(%q) = %q is valid", name, m)
	}
}

// osPipe is a pipe's read and write ends, close-on-exec.
func osPipe() (r, w int, err error) {
	var p [2]int
	err = unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}
