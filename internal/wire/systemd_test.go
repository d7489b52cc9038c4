//go:build linux

package wire

import (
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
)

// TestStoredName: names from systemd's fd store (sdnotify.FDName of a
// registry name) map back to the registry name; socket units' names, and
// names that are no such mapping, stay as they are.
func TestStoredName(t *testing.T) {
	for in, want := range map[string]string{
		"tcp%3A127.0.0.1%3A8080": "tcp:127.0.0.1:8080",
		"unix%3A/run/a b.sock":   "unix:/run/a b.sock",
		"100%25":                 "100%",
		"lines":                  "lines",
		"lineserver.socket":      "lineserver.socket",
		"100%":                   "100%",   // cut short: a socket unit's own name
		"a%20b":                  "a%20b",  // not an escape FDName makes
		"tab%09":                 "tab%09", // would be a control character: not a name
		"%3A":                    ":",      // a name of one ':'
		StateFDName:              StateFDName,
	} {
		assert.Equal(t, want, storedName(in), "LISTEN_FDNAMES %q", in)
	}
	for _, name := range []string{"tcp:[::1]:80", "udp:0.0.0.0:53", "ctl;admin,1 é"} {
		m, err := sdnotify.FDName(name)
		require.NoError(t, err)
		assert.Equal(t, name, storedName(m), "a stored %q comes back under its name", name)
	}
}

// TestDecodeSystemdStoredNames: LISTEN_FDNAMES from the fd store decode
// to the registry names, beside a socket unit's.
func TestDecodeSystemdStoredNames(t *testing.T) {
	env := map[string]string{EnvListenPID: strconv.Itoa(testPID), EnvListenFDs: "3",
		EnvListenFDNames: "lines.socket:tcp%3A127.0.0.1%3A8080:" + StateFDName}
	got, err := Decode(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, testPID, testPPID)
	require.NoError(t, err)
	assert.Equal(t, []Entry{{Name: "lines.socket", FD: 3}, {Name: "tcp:127.0.0.1:8080", FD: 4}, {Name: StateFDName, FD: 5}},
		got.Entries, "the stored socket is named as it was registered")
}

// memfd is a memfd holding b; the test closes it if Open does not take it.
func memfd(t *testing.T, b []byte) int {
	t.Helper()
	fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	_, err = unix.Write(fd, b)
	require.NoError(t, err)
	return fd
}

// TestOpenStoredState: the state blob the fd store handed back (a memfd
// named StateFDName) is not checked as a socket: Open sets it aside,
// close-on-exec, for StoredState, once; the sockets beside it are
// claimed by their registry names, and it is no unclaimed socket.
func TestOpenStoredState(t *testing.T) {
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	sockFD := dupFD(t, ln.(*net.TCPListener))
	stateFD := memfd(t, []byte("counter=7"))
	_, err := unix.FcntlInt(uintptr(stateFD), unix.F_SETFD, 0) // systemd hands fds on without close-on-exec
	require.NoError(t, err)
	f := openFiles(t, &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1, Entries: []Entry{
		{Name: StateFDName, FD: stateFD}, {Name: "tcp:" + ln.Addr().String(), FD: sockFD}}})
	assert.Len(t, f.Unclaimed(), 1, "the state is no socket to claim")
	assertCloseOnExec(t, stateFD, "the state's fd")
	st := f.StoredState()
	require.NotNil(t, st, "the state is handed out")
	b, err := io.ReadAll(io.NewSectionReader(st, 0, 1<<10)) // the offset is where the writer left it
	require.NoError(t, err)
	assert.Equal(t, "counter=7", string(b))
	st.Close()
	assert.Nil(t, f.StoredState(), "only once")
	l, err := f.Listener("tcp:"+ln.Addr().String(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	require.NotNil(t, l, "the socket beside it is claimed by name")
	l.Close()
}

// TestOpenStateNameOnSocket: a socket named StateFDName (a socket unit's
// FileDescriptorName=) stays a socket; and outside systemd's variables
// the name means nothing.
func TestOpenStateNameOnSocket(t *testing.T) {
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	f := openFiles(t, &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1, Entries: []Entry{
		{Name: StateFDName, FD: dupFD(t, ln.(*net.TCPListener))}}})
	assert.Nil(t, f.StoredState(), "a socket is no state")
	assert.Len(t, f.Unclaimed(), 1, "it is a socket to claim")

	stateFD := memfd(t, nil)
	closeOnCleanup(t, stateFD)
	_, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Entries: []Entry{
		{Name: StateFDName, FD: stateFD, Network: "tcp", Address: "127.0.0.1:1"}}})
	assert.ErrorIs(t, err, ErrBadFD, "from a parent generation a memfd is no socket, whatever its name")
}

// TestOpenNoStoredState: a first start has none.
func TestOpenNoStoredState(t *testing.T) {
	f, err := Open(nil)
	require.NoError(t, err)
	assert.Nil(t, f.StoredState())
}
