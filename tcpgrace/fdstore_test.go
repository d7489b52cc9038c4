//go:build linux

package tcpgrace

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// fdManager is a fake service manager with an fd store: it reads the
// messages as systemd does, with their fds, and keeps the store as
// systemd 252 does (FDSTORE=1 adds under FDNAME=, FDSTOREREMOVE=1 drops
// every fd of that name, BARRIER=1's fd is closed at once).
type fdManager struct {
	t     *testing.T
	path  string
	conn  *net.UnixConn
	store []storedFD
	msgs  []string // every message, in order
}

// storedFD is one fd in the fake store.
type storedFD struct {
	name string
	fd   int
}

func newFDManager(t *testing.T) *fdManager {
	dir, err := os.MkdirTemp("", "sd") // short: a socket path has 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &fdManager{t: t, path: filepath.Join(dir, "notify")}
	m.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.path, Net: "unixgram"})
	require.NoError(t, err, "the fake manager listens")
	t.Cleanup(func() {
		m.conn.Close()
		for _, s := range m.store {
			unix.Close(s.fd)
		}
	})
	return m
}

func (m *fdManager) notifier() *sdNotifier {
	return newNotifier(sdnotify.Env{Socket: m.path})
}

// read handles the messages sent so far, waiting up to wait for the
// first one; false if none came.
func (m *fdManager) read(wait time.Duration) bool {
	m.t.Helper()
	got := false
	for {
		m.conn.SetReadDeadline(time.Now().Add(wait))
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*sdnotify.MaxFDs))
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return got
		}
		got, wait = true, 20*time.Millisecond
		var fds []int
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		require.NoError(m.t, err)
		for _, c := range cmsgs {
			more, err := unix.ParseUnixRights(&c)
			require.NoError(m.t, err)
			fds = append(fds, more...)
		}
		m.handle(string(buf[:n]), fds)
	}
}

// handle acts on one message as systemd 252 does.
func (m *fdManager) handle(msg string, fds []int) {
	m.msgs = append(m.msgs, msg)
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	name := ""
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "FDNAME="); ok {
			name = v
		}
	}
	switch {
	case lines[0] == "FDSTORE=1":
		for _, fd := range fds {
			m.store = append(m.store, storedFD{name, fd})
		}
		return
	case lines[0] == "FDSTOREREMOVE=1":
		kept := m.store[:0]
		for _, s := range m.store {
			if s.name == name {
				unix.Close(s.fd)
				continue
			}
			kept = append(kept, s)
		}
		m.store = kept
	}
	for _, fd := range fds { // BARRIER=1's pipe, or fds systemd would not keep
		unix.Close(fd)
	}
}

// names lists the store's names.
func (m *fdManager) names() []string {
	var out []string
	for _, s := range m.store {
		out = append(out, s.name)
	}
	return out
}

// restart hands the store to a next start as systemd does
// (LISTEN_FDS/LISTEN_FDNAMES decoded by wire): copies of its fds under
// the names that decoding gives them.
func (m *fdManager) restart() *wire.Files {
	m.t.Helper()
	env := &wire.Env{Source: wire.EnvListenFDs, Generation: 1, ReadyFD: -1}
	for _, s := range m.store {
		fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD, 0)
		require.NoError(m.t, err)
		name := s.name
		if n, err := sdnotify.ParseFDName(s.name); err == nil {
			name = n // as decodeSystemd maps it
		}
		env.Entries = append(env.Entries, wire.Entry{Name: name, FD: fd})
	}
	files, err := wire.Open(env)
	require.NoError(m.t, err, "the next start takes what the store holds")
	return files
}

// TestFDStoreRestart: under a service manager with an fd store, a first
// generation stores the TCP and UDP sockets it bound (not the Unix one)
// at Ready, and its state as it stops; a connection made while no
// process serves waits in the stored socket's queue, and the next start
// claims the socket by its name, serves that connection, and inherits
// the state at once. At its Ready it takes the state out of the store
// (a crash would not bring it back) and the socket it no longer asks
// for, and stores nothing it inherited.
func TestFDStoreRestart(t *testing.T) {
	m := newFDManager(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	u1 := newColdUpgrader(t, Options{State: func() []byte { return []byte("count=42") }})
	u1.sd = m.notifier()
	web, err := u1.Listen("tcp:web", "tcp4", loopback)
	require.NoError(t, err)
	_, err = u1.ListenPacket("dns", "udp4", loopback)
	require.NoError(t, err)
	_, err = u1.Listen("ctl", "unix", sock)
	require.NoError(t, err)
	require.NoError(t, u1.Ready())
	require.True(t, m.read(ioTimeout), "messages at Ready")
	assert.ElementsMatch(t, []string{"tcp%3Aweb", "dns"}, m.names(), "Ready stored the TCP and UDP sockets by FDName, not the Unix one")

	shut := make(chan error, 1)
	go func() { shut <- u1.Shutdown(context.Background()) }()
	for len(shut) == 0 { // answer BARRIER=1 as it comes: Shutdown waits for it
		m.read(10 * time.Millisecond)
	}
	require.NoError(t, <-shut)
	m.read(10 * time.Millisecond)
	assert.ElementsMatch(t, []string{"tcp%3Aweb", "dns", wire.StateFDName}, m.names(), "Shutdown stored the state")

	c, err := net.DialTimeout("tcp", web.Addr().String(), ioTimeout)
	require.NoError(t, err, "with no process serving, a connection waits in the stored socket's queue")
	defer c.Close()

	u2, err := newUpgrader(Options{}, m.restart())
	require.NoError(t, err)
	t.Cleanup(func() { u2.Close() })
	u2.sd = m.notifier()
	state, err := u2.Inherited(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "count=42", string(state), "the next start inherits the state, before Ready")
	web2, err := u2.Listen("tcp:web", "tcp4", loopback)
	require.NoError(t, err)
	assert.Equal(t, web.Addr().String(), web2.Addr().String(), "the stored socket is claimed by its name")
	require.NoError(t, u2.Ready())
	m.read(ioTimeout)
	assert.Equal(t, []string{"tcp%3Aweb"}, m.names(), "Ready took the state and the unclaimed UDP socket out, and stored nothing again")
	state, _ = u2.Inherited(context.Background())
	assert.Equal(t, "count=42", string(state), "Inherited still says what came")

	go io.Copy(io.Discard, c)
	a, err := web2.Accept()
	require.NoError(t, err, "the connection made while nobody served is accepted by the next start")
	_, err = a.Write([]byte("hi\n"))
	require.NoError(t, err)
	a.Close()
	require.NoError(t, u2.Shutdown(context.Background()))
}

// TestFDStoreChildWaitsForParent: a generation started by Upgrade sends
// nothing to the store at Ready (its parent is the main process until it
// sent MAINPID=, which comes after), but once the parent closed the
// hand-off channel: then it stores the socket it bound itself (not the
// one it inherited, which its parent stored) and takes out the one it
// inherited and did not claim.
func TestFDStoreChildWaitsForParent(t *testing.T) {
	m := newFDManager(t)
	parent := newColdUpgrader(t, Options{})
	web, err := parent.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	old, err := parent.Listen("old", "tcp4", loopback)
	require.NoError(t, err)
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	ch, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	parentEnd := os.NewFile(uintptr(ch[0]), "parent's end")
	defer parentEnd.Close()
	files, err := wire.Open(&wire.Env{Source: wire.EnvFDs, Generation: 2, ReadyFD: p[1], Handoff: ch[1], Entries: []wire.Entry{
		{Name: "web", FD: rawDup(t, web.(syscall.Conn)), Network: "tcp4", Address: loopback},
		{Name: "old", FD: rawDup(t, old.(syscall.Conn)), Network: "tcp4", Address: loopback}}})
	require.NoError(t, err)
	u, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	u.sd = m.notifier()
	require.True(t, u.inh.HasParent() && u.in != nil, "precondition: a child with a hand-off channel")
	_, err = u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	_, err = u.Listen("new", "tcp4", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	assert.False(t, m.read(200*time.Millisecond), "nothing while the parent is the main process: %q", m.msgs)
	parentEnd.Close() // the parent is done
	require.True(t, m.read(ioTimeout), "the store messages once the parent closed the channel")
	assert.Equal(t, []string{"FDSTOREREMOVE=1\nFDNAME=old\n", "FDSTORE=1\nFDNAME=new\n"}, m.msgs,
		"the unclaimed socket comes out, the new one goes in, the inherited one is left alone")
	assert.Equal(t, []string{"new"}, m.names())
}

// TestFDStoreNoManager: without a service manager nothing is stored, and
// Inherited of a cold start is nil.
func TestFDStoreNoManager(t *testing.T) {
	u := newColdUpgrader(t, Options{State: func() []byte { return []byte("x") }})
	_, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	b, err := u.Inherited(context.Background())
	assert.NoError(t, err)
	assert.Nil(t, b)
	require.NoError(t, u.Shutdown(context.Background()))
}

// TestFDStoreDisabled: with DisableFDStore nothing goes to the store,
// neither the sockets at Ready nor the state at Shutdown; the manager
// still hears READY=1 and STOPPING=1.
func TestFDStoreDisabled(t *testing.T) {
	m := newFDManager(t)
	u := newColdUpgrader(t, Options{DisableFDStore: true, State: func() []byte { return []byte("x") }})
	u.sd = m.notifier()
	_, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	require.NoError(t, u.Shutdown(context.Background()))
	m.read(ioTimeout)
	assert.Empty(t, m.names(), "nothing stored")
	for _, msg := range m.msgs {
		assert.NotContains(t, msg, "FDSTORE", "no fd store message: %q", m.msgs)
	}
	all := strings.Join(m.msgs, "")
	assert.Contains(t, all, "READY=1", "the manager hears the rest")
	assert.Contains(t, all, "STOPPING=1", "the manager hears the rest")
}
