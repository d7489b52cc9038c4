package tests

import (
	"fmt"
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
// claiming it by address, and hands it on at the next upgrade, under load
// throughout. The test closes its own copies once the server runs, so the
// server's is the only one: a socket it dropped would refuse connections.
func TestSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// A copy made as systemd holds it; not File(), which would switch the
	// shared socket to blocking mode.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	require.NoError(t, err)
	var fd int
	require.NoError(t, rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }))
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "systemd socket")
	addr := ln.Addr().String()
	// sh sets LISTEN_PID to its own pid, which exec hands on to lineserver.
	s := launch(t, lineserverBin, launchOpts{
		env:   []string{"LISTEN_FDS=1"},
		shell: "LISTEN_PID=$$; export LISTEN_PID;",
		extra: []*os.File{f},
	}, "-tcp", addr)
	require.NoError(t, f.Close())
	require.NoError(t, ln.Close())
	waitFor(t, "the inherited listener", func() bool {
		return strings.Contains(s.logs.String(), "listener=tcp:"+addr+" network=tcp addr="+addr+" inherited=true")
	})
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	s.upgrade()
	l.waitRequests(t, 100)
	s.upgrade()
	l.waitRequests(t, 100)
	l.stopLoad(t)
	for gen := 2; gen <= 3; gen++ {
		assert.Contains(t, s.logs.String(), fmt.Sprintf("generation=%d listener=tcp:%s network=tcp addr=%s inherited=true", gen, addr, addr),
			"generation %d inherits the socket systemd passed", gen)
	}
}
