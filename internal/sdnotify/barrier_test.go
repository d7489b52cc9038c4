//go:build linux

package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestBarrier: Barrier sends BARRIER=1 with one fd and returns once the
// manager closed it, not before; with a manager that keeps it, it gives
// up at its timeout and says so.
func TestBarrier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	defer mgr.Close()
	s := NewSender(path)
	defer s.Close()

	got := make(chan []int, 2)
	read := func() {
		buf, oob := make([]byte, 128), make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := mgr.ReadMsgUnix(buf, oob)
		if err != nil || strings.TrimSpace(string(buf[:n])) != "BARRIER=1" {
			got <- nil
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		got <- fds
	}

	go read()
	done := make(chan error, 1)
	go func() { done <- s.Barrier(5 * time.Second) }()
	fds := <-got
	require.Len(t, fds, 1, "BARRIER=1 comes with one fd")
	select {
	case err := <-done:
		require.Failf(t, "Barrier returned before the manager closed the fd", "%v", err)
	case <-time.After(50 * time.Millisecond):
	}
	unix.Close(fds[0])
	require.NoError(t, <-done, "Barrier returns once the manager closed the fd")

	go read()
	err = s.Barrier(100 * time.Millisecond)
	kept := <-got
	assert.ErrorContains(t, err, "did not get to it within 100ms")
	for _, fd := range kept {
		unix.Close(fd)
	}
}
