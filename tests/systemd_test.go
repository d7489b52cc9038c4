package tests

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSocketActivation: lineserver started the way systemd starts a
// socket-activated service (the listening socket as fd 3, LISTEN_FDS=1,
// LISTEN_PID naming the process itself) serves that socket unchanged,
// claiming it by address, and hands it on at the next upgrade.
func TestSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	// A copy made as systemd holds it; not File(), which would switch the
	// shared socket to blocking mode.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	require.NoError(t, err)
	var fd int
	require.NoError(t, rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }))
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "systemd socket")
	defer f.Close()
	addr := ln.Addr().String()
	// sh sets LISTEN_PID to its own pid, which exec hands on to lineserver.
	s := launch(t, lineserverBin, launchOpts{
		env:   []string{"LISTEN_FDS=1"},
		shell: "LISTEN_PID=$$; export LISTEN_PID;",
		extra: []*os.File{f},
	}, "-tcp", addr)
	waitFor(t, "the inherited listener", func() bool {
		return strings.Contains(s.logs.String(), "listener=tcp:"+addr+" network=tcp addr="+addr+" inherited=true")
	})
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	s.upgrade()
	l.waitRequests(t, 100)
	l.stopLoad(t)
	assert.Contains(t, s.logs.String(), "generation=2 listener=tcp:"+addr+" network=tcp addr="+addr+" inherited=true",
		"the next generation inherits the socket systemd passed")
}
