//go:build linux

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ioTimeout bounds every wait of these tests for something that should
// happen at once.
const ioTimeout = 5 * time.Second

// envClient makes the test binary a client (TestMain): it sends a status
// request to the socket the variable names and prints the reply line.
const envClient = "CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(envClient); path != "" {
		os.Exit(runClient(path))
	}
	os.Exit(m.Run())
}

// runClient is the client of envClient, without the uid check of Do (the
// test server is root's, the client is not).
func runClient(path string) int {
	c, err := net.DialTimeout("unix", path, ioTimeout)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	io.WriteString(c, `{"v":1,"cmd":"status"}`+"\n")
	rep, err := ReadReply(c)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	line, _ := json.Marshal(rep)
	fmt.Println(string(line))
	return 0
}

// testServer is a started server of opts on a Unix socket in a temp dir,
// named "test: control"; without a Handler, one that answers with the
// peer's pid and the command.
func testServer(t *testing.T, opts ServerOptions) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err, "listening")
	if opts.Handler == nil {
		opts.Handler = func(req Request, peer Peer, _ net.Conn) *Reply {
			return &Reply{V: Version, OK: true, Status: &Status{PID: peer.PID, State: req.Cmd}}
		}
	}
	opts.Name = "test: control"
	s := NewServer(ln, opts)
	s.Start()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		s.Close(ctx)
		s.Wait()
	})
	return s, path
}

// dial connects to path; the connection is closed at the test's end.
func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, ioTimeout)
	require.NoError(t, err, "dialing")
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

// status asks path for its status with Do.
func status(t *testing.T, path string) *Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	rep, err := Do(ctx, path, Request{Cmd: CmdStatus})
	require.NoError(t, err, "a reply")
	return rep
}

// TestServerAnswers: a request reaches the handler with the peer's
// credentials, and its reply reaches the client, who is then closed.
func TestServerAnswers(t *testing.T) {
	_, path := testServer(t, ServerOptions{})
	rep := status(t, path)
	require.True(t, rep.OK, "answered: %s", rep.Error)
	assert.Equal(t, os.Getpid(), rep.Status.PID, "the handler was told the peer's pid")
	assert.Equal(t, CmdStatus, rep.Status.State, "and its request")
}

// TestServerBadRequests: a request that is too long, malformed or never
// sent is answered by the server itself, with the error prefixed by its
// name and the code bad_request, and the connection closed.
func TestServerBadRequests(t *testing.T) {
	_, path := testServer(t, ServerOptions{})
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"garbage", "hello\n", "test: control: malformed request"},
		{"unknown command", `{"v":1,"cmd":"reboot"}` + "\n", `test: control: unknown command "reboot"`},
		{"another version", `{"v":2,"cmd":"status"}` + "\n", "test: control: request of protocol version 2"},
		{"oversized", strings.Repeat("x", 2*MaxRequestLen), "test: control: request longer than 4096 bytes"},
		{"closed without a word", "", "test: control: closed without a request"},
		{"end of stream instead of a newline", `{"v":1,"cmd":"status"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, path)
			io.WriteString(c, tc.raw)
			c.(*net.UnixConn).CloseWrite()
			rep, err := ReadReply(c)
			require.NoError(t, err, "a reply")
			if tc.want == "" {
				assert.True(t, rep.OK, "taken: %s", rep.Error)
				assert.Empty(t, rep.Code, "no code when ok")
			} else {
				assert.True(t, strings.HasPrefix(rep.Error, tc.want), "the error says why: %s", rep.Error)
				assert.Equal(t, CodeBadRequest, rep.Code, "the server did not understand")
			}
			_, err = c.Read(make([]byte, 1))
			assert.Error(t, err, "closed after the reply")
		})
	}
}

// TestServerBusy: past MaxConns open connections, the next one is told
// so at once and closed; once one is gone requests are answered again.
func TestServerBusy(t *testing.T) {
	s, path := testServer(t, ServerOptions{MaxConns: 2})
	idle := []net.Conn{dial(t, path), dial(t, path)}
	require.Eventually(t, func() bool { return s.Open() == 2 }, ioTimeout, time.Millisecond, "both admitted")
	assert.True(t, s.Busy(), "busy while requests are read")
	rep := status(t, path)
	assert.Equal(t, "test: control: busy, 2 requests open; try again", rep.Error, "the third is refused")
	assert.Equal(t, CodeRefused, rep.Code, "for now")
	idle[0].Close()
	require.Eventually(t, func() bool { return s.Open() == 1 }, ioTimeout, time.Millisecond, "one gone")
	assert.True(t, status(t, path).OK, "answered again")
	idle[1].Close()
	require.Eventually(t, func() bool { return !s.Busy() }, ioTimeout, time.Millisecond, "idle at last")
}

// TestServerSlowClient: a client that sends nothing, or half a line, is
// answered with an error after the read timeout and dropped; others are
// answered meanwhile.
func TestServerSlowClient(t *testing.T) {
	_, path := testServer(t, ServerOptions{ReadTimeout: 300 * time.Millisecond})
	for _, partial := range []string{"", `{"v":1,"cmd":`} {
		c := dial(t, path)
		io.WriteString(c, partial)
		begin := time.Now()
		assert.True(t, status(t, path).OK, "another client is answered meanwhile")
		assert.Less(t, time.Since(begin), 200*time.Millisecond, "at once")
		rep, err := ReadReply(c)
		require.NoError(t, err, "the slow client gets a reply")
		assert.Contains(t, rep.Error, fmt.Sprintf("no complete request within 300ms (%d bytes read)", len(partial)), "that says why")
		assert.Equal(t, CodeBadRequest, rep.Code)
		assert.GreaterOrEqual(t, time.Since(begin), 250*time.Millisecond, "after the read timeout")
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "and it is dropped")
	}
}

// TestServerWriteTimeout: a client that does not take its reply holds
// its handler no longer than the write timeout. The reply, 1 MiB, is
// five times a Unix socket's default send buffer, so that its write
// blocks; a larger one took seconds to encode under the race detector on
// a busy machine, before the write and its deadline began.
func TestServerWriteTimeout(t *testing.T) {
	big := &Reply{V: Version, OK: true, Status: &Status{State: strings.Repeat("x", 1<<20)}}
	s, path := testServer(t, ServerOptions{WriteTimeout: 200 * time.Millisecond,
		Handler: func(Request, Peer, net.Conn) *Reply { return big }})
	c := dial(t, path)
	io.WriteString(c, `{"v":1,"cmd":"status"}`+"\n")
	begin := time.Now()
	require.Eventually(t, func() bool { return s.Open() == 1 }, ioTimeout, time.Millisecond, "admitted")
	require.Eventually(t, func() bool { return s.Open() == 0 }, ioTimeout, 10*time.Millisecond, "dropped")
	assert.Less(t, time.Since(begin), 2*time.Second, "at the write timeout")
}

// TestCheckPeer: root and the server's own uid may ask, nobody else.
func TestCheckPeer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		uid, self uint32
		ok        bool
	}{
		{"root", 0, 1000, true},
		{"the same uid", 1000, 1000, true},
		{"root asking root", 0, 0, true},
		{"another uid", 65534, 1000, false},
		{"a user asking a root server", 1000, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPeer("test: control", tc.uid, tc.self)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, fmt.Sprintf("test: control: permission denied: uid %d may not ask; only root and uid %d may", tc.uid, tc.self),
				err.Error(), "the error names both uids")
		})
	}
}

// TestServerRefusesOtherUID: a client of another uid (nobody) is refused
// by its credentials, whatever the socket file's mode; the handler never
// runs.
func TestServerRefusesOtherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the client runs as another user (uid 65534)")
	}
	var ran atomic.Bool
	_, path := testServer(t, ServerOptions{Handler: func(Request, Peer, net.Conn) *Reply {
		ran.Store(true)
		return &Reply{V: Version, OK: true}
	}})
	bin := filepath.Join(t.TempDir(), "client")
	self, err := os.Executable()
	require.NoError(t, err)
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	for _, p := range []string{path, filepath.Dir(path), filepath.Dir(bin)} {
		require.NoError(t, os.Chmod(p, 0o777), "letting nobody reach %s", p)
	}
	for _, p := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(filepath.Dir(bin))} {
		require.NoError(t, os.Chmod(p, 0o755), "letting nobody through %s", p)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envClient+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the client ran: %s", out)
	assert.Contains(t, string(out), "test: control: permission denied: uid 65534 may not ask; only root and uid 0 may", "refused by its uid")
	assert.Contains(t, string(out), `"code":"denied"`, "with the code denied")
	assert.False(t, ran.Load(), "the handler never ran")
	assert.True(t, status(t, path).OK, "root is answered")
}

// blockingServer is a server whose handler waits for release (or the
// test's end); started is sent to as it begins.
func blockingServer(t *testing.T) (s *Server, path string, started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 10), make(chan struct{})
	s, path = testServer(t, ServerOptions{Handler: func(Request, Peer, net.Conn) *Reply {
		started <- struct{}{}
		<-release
		return &Reply{V: Version, OK: true}
	}})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return s, path, started, release
}

// request sends a status request on a new connection.
func request(t *testing.T, path string) net.Conn {
	t.Helper()
	c := dial(t, path)
	_, err := io.WriteString(c, `{"v":1,"cmd":"status"}`+"\n")
	require.NoError(t, err)
	return c
}

// TestServerCloseWaits: Close waits for the request being carried out,
// whose reply still reaches its client, and returns nil; it ends the
// accept loop (Done) but leaves the listener open.
func TestServerCloseWaits(t *testing.T) {
	s, path, started, release := blockingServer(t)
	c := request(t, path)
	<-started
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case err := <-closed:
		require.Failf(t, "Close should wait for the handler", "it returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	select {
	case <-s.Done():
	default:
		assert.Fail(t, "Done is closed by Close")
	}
	close(release)
	rep, err := ReadReply(c)
	require.NoError(t, err, "the reply of the request being carried out")
	assert.True(t, rep.OK)
	assert.NoError(t, <-closed, "Close returns once it was answered")
	s.Start()
	late, err := net.DialTimeout("unix", path, ioTimeout)
	require.NoError(t, err, "the listener is the caller's: still open")
	defer late.Close()
	late.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = late.Read(make([]byte, 1))
	assert.True(t, errors.Is(err, os.ErrDeadlineExceeded), "nobody accepts after Close, even after a Start: %v", err)
}

// TestServerCloseDeadline: at the end of Close's context the
// connections still open are closed and Close returns the context's
// error; Wait waits for the handlers themselves.
func TestServerCloseDeadline(t *testing.T) {
	s, path, started, release := blockingServer(t)
	c := request(t, path)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.Close(ctx), context.DeadlineExceeded, "Close gives up at its deadline")
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the client's connection is closed")
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
		require.Fail(t, "Wait returned before the handler")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(ioTimeout):
		require.Fail(t, "Wait should return once the handler has")
	}
	assert.False(t, s.Busy(), "nothing open")
}

// TestServerPause: while paused, connections wait in the listener's
// queue and requests accepted before are still answered; a Start answers
// the queued ones.
func TestServerPause(t *testing.T) {
	s, path, started, release := blockingServer(t)
	before := request(t, path)
	<-started
	s.Pause()
	queued := request(t, path)
	select {
	case <-started:
		require.Fail(t, "a connection was accepted while paused")
	case <-time.After(100 * time.Millisecond):
	}
	assert.Equal(t, 1, s.Open(), "only the request accepted before")
	select {
	case <-s.Done():
		require.Fail(t, "a pause does not close Done")
	default:
	}
	close(release)
	rep, err := ReadReply(before)
	require.NoError(t, err, "the request accepted before the pause is answered")
	assert.True(t, rep.OK)
	s.Start()
	rep, err = ReadReply(queued)
	require.NoError(t, err, "the queued one is answered after Start")
	assert.True(t, rep.OK)
}

// TestServerListenerClosed: closing the listener ends the accept loop
// for good (Done).
func TestServerListenerClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	s := NewServer(ln, ServerOptions{Handler: func(Request, Peer, net.Conn) *Reply { return nil }})
	s.Start()
	ln.Close()
	select {
	case <-s.Done():
	case <-time.After(ioTimeout):
		require.Fail(t, "Done should close once the listener is closed")
	}
	s.Pause() // the loop has ended: returns at once
	assert.NoError(t, s.Close(context.Background()), "nothing to wait for")
}
