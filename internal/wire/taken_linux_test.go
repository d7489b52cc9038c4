//go:build linux

package wire

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckFDs: CheckFDs finds an fd that is not what its entry says
// (a pipe where a TCP listener should be, a listener of another family),
// names it, and closes nothing.
func TestCheckFDs(t *testing.T) {
	_, wfd := readyPipe(t)
	defer syscall.Close(wfd)
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	lnFD := dupFD(t, ln.(syscall.Conn))
	defer syscall.Close(lnFD)
	good := &Env{Source: EnvFDs, ReadyFD: wfd, Entries: []Entry{{Name: "web", FD: lnFD, Network: "tcp", Address: "127.0.0.1:0"}}}
	require.NoError(t, good.CheckFDs())

	bad := &Env{Source: EnvFDs, ReadyFD: wfd, Entries: []Entry{{Name: "web", FD: wfd, Network: "tcp", Address: "127.0.0.1:0"}}}
	err := bad.CheckFDs()
	require.ErrorIs(t, err, ErrBadFD)
	assert.Contains(t, err.Error(), `name "web" fd `)

	other := &Env{Source: EnvFDs, ReadyFD: wfd, Entries: []Entry{{Name: "web", FD: lnFD, Network: "unix", Address: "/x"}}}
	err = other.CheckFDs()
	require.ErrorIs(t, err, ErrBadFD)
	assert.Contains(t, err.Error(), "the entry says unix")

	notPipe := &Env{Source: EnvFDs, ReadyFD: lnFD}
	require.ErrorIs(t, notPipe.CheckFDs(), ErrBadFD, "a ready fd that is no pipe")
	var st syscall.Stat_t
	require.NoError(t, syscall.Fstat(lnFD, &st), "CheckFDs closed nothing")
	require.NoError(t, syscall.Fstat(wfd, &st), "CheckFDs closed nothing")
}
