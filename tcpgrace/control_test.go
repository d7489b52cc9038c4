//go:build linux

package tcpgrace

import (
	"context"
	"errors"
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

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// controlUpgrader is a cold, ready Upgrader with a TCP listener ("web")
// and a control socket in a temp dir; before runs ahead of Ready.
func controlUpgrader(t *testing.T, opts Options, before func(u *Upgrader)) (*Upgrader, string, net.Listener) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	opts.Control = path
	u := newColdUpgrader(t, opts)
	web, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err, "listening on tcp")
	if before != nil {
		before(u)
	}
	require.NoError(t, u.Ready(), "Ready")
	return u, path, web
}

// ask sends one request and returns the reply, which must arrive.
func ask(t *testing.T, path string, req control.Request) *control.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	rep, err := control.Do(ctx, path, req)
	require.NoError(t, err, "a %s request should get a reply", req.Cmd)
	return rep
}

// rawAsk sends raw bytes (closing its write side if closeWrite) and
// returns the one reply line; the server must close the connection after
// it.
func rawAsk(t *testing.T, path string, raw []byte, closeWrite bool) *control.Reply {
	t.Helper()
	c, err := net.DialTimeout("unix", path, ioTimeout)
	require.NoError(t, err, "dialing the control socket")
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	_, err = c.Write(raw)
	require.NoError(t, err, "writing the request")
	if closeWrite {
		c.(*net.UnixConn).CloseWrite()
	}
	rep, err := control.ReadReply(c)
	require.NoError(t, err, "a reply line for %.60q", raw)
	n, err := c.Read(make([]byte, 1))
	assert.Equal(t, 0, n, "nothing after the reply")
	// Closed with our request unread (too long), the socket is reset.
	if !errors.Is(err, syscall.ECONNRESET) {
		assert.ErrorIs(t, err, io.EOF, "the server closes the connection after its reply")
	}
	return rep
}

// TestControlStatus: status names this process, its generation, every
// socket it holds with the bound address, its open connections and no
// older generation; the socket file has the default mode 0600.
func TestControlStatus(t *testing.T) {
	u, path, web := controlUpgrader(t, Options{}, nil)
	fi, err := os.Stat(path)
	require.NoError(t, err, "the control socket file exists")
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the control socket is for its owner only")

	c, err := net.DialTimeout("tcp", web.Addr().String(), ioTimeout)
	require.NoError(t, err, "a client connection")
	defer c.Close()
	conn, err := web.Accept()
	require.NoError(t, err, "accepting it")
	defer conn.Close()

	rep := ask(t, path, control.Request{Cmd: control.CmdStatus})
	require.True(t, rep.OK, "status succeeds: %s", rep.Error)
	st := rep.Status
	require.NotNil(t, st, "a status reply carries the status")
	assert.Equal(t, os.Getpid(), st.PID, "pid")
	assert.Equal(t, 1, st.Generation, "generation")
	assert.Equal(t, "serving", st.State, "state")
	assert.Equal(t, u.executable, st.Executable, "the executable an upgrade starts")
	assert.WithinDuration(t, time.Now(), st.Started, time.Minute, "started just now")
	assert.Equal(t, 1, st.Connections, "the one open connection")
	assert.Empty(t, st.Older, "no older generation")
	assert.Equal(t, []control.Listener{
		{Name: "web", Network: "tcp", Address: web.Addr().String()},
	}, st.Listeners, "the program's sockets, with their bound address; not the control socket")
}

// TestControlModeIgnoresUnixMode: the control socket is 0600 whatever
// Options.UnixMode gives the other Unix sockets (it took their mode).
func TestControlModeIgnoresUnixMode(t *testing.T) {
	for _, mode := range []os.FileMode{0, 0o660, 0o666} {
		_, path, _ := controlUpgrader(t, Options{UnixMode: mode}, nil)
		fi, err := os.Stat(path)
		require.NoError(t, err, "the control socket file exists")
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the control socket's mode with UnixMode %#o", mode)
	}
}

// TestControlLiveSocketRefused: a control path where a live server
// listens makes New fail, naming the path; a stale socket file is
// replaced.
func TestControlLiveSocketRefused(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, nil)
	files, err := wire.Open(nil)
	require.NoError(t, err)
	_, err = newUpgrader(Options{Control: path}, files)
	require.Error(t, err, "a second server on a live control socket")
	assert.Contains(t, err.Error(), path, "the error names the path")
	assert.Contains(t, err.Error(), "a live server listens there", "the error says why")

	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	u := newColdUpgrader(t, Options{Control: stale})
	require.NoError(t, u.Ready(), "Ready over a stale control socket file")
	assert.True(t, ask(t, stale, control.Request{Cmd: control.CmdStatus}).OK, "the replaced socket answers")
}

// TestControlBadRequests: malformed input, unknown commands, other
// versions and oversized requests each get an error reply that says what
// was wrong, and the connection is closed; a request ended by closing
// the write side instead of a newline is taken.
func TestControlBadRequests(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, nil)
	big := `{"v":1,"cmd":"status","pad":"` + strings.Repeat("x", control.MaxRequestLen) + `"}` + "\n"
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"garbage", "hello there\n", "malformed request"},
		{"empty line", "\n", "empty request"},
		{"array", "[1,2]\n", "malformed request"},
		{"no version", `{"cmd":"status"}` + "\n", "without a protocol version"},
		{"other version", `{"v":2,"cmd":"status"}` + "\n", "protocol version 2, this server speaks 1"},
		{"no command", `{"v":1}` + "\n", "without a command"},
		{"unknown command", `{"v":1,"cmd":"reboot"}` + "\n", `unknown command "reboot"`},
		{"negative timeout", `{"v":1,"cmd":"upgrade","timeout_ms":-1}` + "\n", "negative timeout_ms"},
		{"trailing garbage", `{"v":1,"cmd":"status"} x` + "\n", "malformed request"},
		{"oversized", big, "request longer than 4096 bytes"},
		{"oversized, no newline", strings.Repeat("x", 3*control.MaxRequestLen), "request longer than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := rawAsk(t, path, []byte(tc.raw), false)
			assert.False(t, rep.OK, "refused")
			assert.Contains(t, rep.Error, tc.want, "the error says what was wrong")
			assert.Nil(t, rep.Status, "no result with an error")
		})
	}
	t.Run("end of stream instead of a newline", func(t *testing.T) {
		rep := rawAsk(t, path, []byte(`{"v":1,"cmd":"status","later":"ignored"}`), true)
		assert.True(t, rep.OK, "taken: %s", rep.Error)
		assert.NotNil(t, rep.Status, "with the status")
	})
	t.Run("closed without a word", func(t *testing.T) {
		rep := rawAsk(t, path, nil, true)
		assert.Contains(t, rep.Error, "closed without a request", "said, if anyone reads")
	})
}

// TestControlSlowClientDropped: a client that sends nothing, or half a
// line, is answered with an error and dropped after the read timeout;
// meanwhile other requests are answered at once.
func TestControlSlowClientDropped(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, func(u *Upgrader) { u.ctl.readTimeout = 300 * time.Millisecond })
	for _, partial := range []string{"", `{"v":1,"cmd":`} {
		c, err := net.DialTimeout("unix", path, ioTimeout)
		require.NoError(t, err, "dialing")
		defer c.Close()
		if partial != "" {
			_, err = io.WriteString(c, partial)
			require.NoError(t, err)
		}
		begin := time.Now()
		assert.True(t, ask(t, path, control.Request{Cmd: control.CmdStatus}).OK, "another client is answered meanwhile")
		assert.Less(t, time.Since(begin), 200*time.Millisecond, "at once, not after the slow client")
		c.SetDeadline(time.Now().Add(ioTimeout))
		rep, err := control.ReadReply(c)
		require.NoError(t, err, "the slow client gets a reply")
		assert.Contains(t, rep.Error, "no complete request within 300ms", "that says why")
		assert.GreaterOrEqual(t, time.Since(begin), 250*time.Millisecond, "after the read timeout")
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "and is dropped")
	}
}

// TestControlBusy: past control.MaxConns open connections, the next one is
// told so at once and closed; once they are gone requests are answered.
func TestControlBusy(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, func(u *Upgrader) { u.ctl.readTimeout = time.Second })
	var idle []net.Conn
	for range control.MaxConns {
		c, err := net.DialTimeout("unix", path, ioTimeout)
		require.NoError(t, err, "dialing")
		idle = append(idle, c)
	}
	require.Eventually(t, func() bool {
		rep, err := control.Do(context.Background(), path, control.Request{Cmd: control.CmdStatus})
		return err == nil && strings.Contains(rep.Error, "busy")
	}, ioTimeout, 10*time.Millisecond, "a request past the limit is told the server is busy")
	for _, c := range idle {
		c.Close()
	}
	require.Eventually(t, func() bool {
		rep, err := control.Do(context.Background(), path, control.Request{Cmd: control.CmdStatus})
		return err == nil && rep.OK
	}, ioTimeout, 10*time.Millisecond, "answered again once the idle ones are gone")
}

// TestControlStop: stop makes Serve drain as a stop signal does, and is
// answered once draining has begun, with the connections it drains; the
// control socket goes with the other listeners.
func TestControlStop(t *testing.T) {
	u, path, web := controlUpgrader(t, Options{}, nil)
	served := make(chan error, 1)
	srv := &Server{Upgrader: u, Handler: func(_ context.Context, c net.Conn) { io.Copy(c, c); c.Close() }}
	go func() { served <- srv.Serve(context.Background(), web) }()
	c, err := net.DialTimeout("tcp", web.Addr().String(), ioTimeout)
	require.NoError(t, err, "a client connection")
	defer c.Close()
	require.Eventually(t, func() bool { return u.Stats().Active == 1 }, ioTimeout, time.Millisecond, "accepted")

	rep := ask(t, path, control.Request{Cmd: control.CmdStop})
	require.True(t, rep.OK, "stop succeeds: %s", rep.Error)
	assert.Equal(t, control.Stopping{PID: os.Getpid(), Connections: 1, PIDNamespace: control.PIDNamespace()}, *rep.Stop, "the pid and the connection it drains")
	require.Eventually(t, func() bool {
		_, err := os.Stat(path)
		return os.IsNotExist(err)
	}, ioTimeout, time.Millisecond, "the control socket file is removed with the listeners")
	select {
	case err := <-served:
		require.Failf(t, "Serve should drain the open connection", "it returned %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-served:
		assert.NoError(t, err, "Serve drained and returned")
	case <-time.After(ioTimeout):
		require.Fail(t, "Serve should return once the connection closed")
	}
}

// TestControlWhileStopping: while Run's server drains after a stop
// request the control socket still answers: an upgrade is refused,
// status says stopping, a second stop is answered as the first.
func TestControlWhileStopping(t *testing.T) {
	u, path, web := controlUpgrader(t, Options{}, nil)
	draining, release := make(chan struct{}), make(chan struct{})
	ran := make(chan error, 1)
	srv := &Server{Upgrader: u}
	go func() {
		ran <- srv.Run(context.Background(), func() error {
			<-draining
			return nil
		}, func(context.Context) error {
			close(draining)
			<-release
			return nil
		})
	}()
	defer web.Close()
	require.Eventually(t, func() bool { return ask(t, path, control.Request{Cmd: control.CmdStop}).OK },
		ioTimeout, time.Millisecond, "stop succeeds once Run's loop runs")
	<-draining
	rep := ask(t, path, control.Request{Cmd: control.CmdUpgrade})
	assert.False(t, rep.OK, "no upgrade while stopping")
	assert.Contains(t, rep.Error, "leaving", "the error says why")
	assert.Equal(t, "stopping", ask(t, path, control.Request{Cmd: control.CmdStatus}).Status.State, "status says it stops")
	rep = ask(t, path, control.Request{Cmd: control.CmdStop})
	assert.True(t, rep.OK, "a second stop: it drains already (%s)", rep.Error)
	close(release)
	select {
	case err := <-ran:
		assert.NoError(t, err, "Run drained and returned")
	case <-time.After(ioTimeout):
		require.Fail(t, "Run should return once its server stopped")
	}
	_, err := os.Stat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "the control socket file is removed at the end")
}

// TestControlStopWithoutServer: without a Server loop nothing could
// drain: stop says so instead of waiting.
func TestControlStopWithoutServer(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, nil)
	rep := ask(t, path, control.Request{Cmd: control.CmdStop})
	assert.False(t, rep.OK, "refused")
	assert.Contains(t, rep.Error, "no Server", "the error says why")
}

// TestControlUpgradeFailures: a failed upgrade's reply carries the
// child's reason: its Fail text, its exit status; a request's timeout
// cancels an upgrade; a second upgrade while one runs is told at once.
func TestControlUpgradeFailures(t *testing.T) {
	h := newHarness(t, 5*time.Second, func(o *Options) { o.Control = filepath.Join(t.TempDir(), "control.sock") })
	path := h.u.opts.Control
	h.useChild(childFail)
	rep := ask(t, path, control.Request{Cmd: control.CmdUpgrade})
	assert.False(t, rep.OK, "a child that fails")
	assert.Contains(t, rep.Error, childFailReason, "its reason")
	h.startedChild()

	h.useChild(childExit3)
	rep = ask(t, path, control.Request{Cmd: control.CmdUpgrade})
	assert.Contains(t, rep.Error, "exit status 3", "a child that exits: its status")
	h.startedChild()

	h.useChild(childHang)
	done := make(chan *control.Reply, 1)
	begin := time.Now()
	go func() {
		rep, _ := control.Do(context.Background(), path, control.Request{Cmd: control.CmdUpgrade, TimeoutMS: 500})
		done <- rep
	}()
	hung := h.startedChild()
	rep = ask(t, path, control.Request{Cmd: control.CmdUpgrade})
	assert.Contains(t, rep.Error, "in progress", "a second upgrade is told at once")
	rep = <-done
	require.NotNil(t, rep, "the first one gets a reply")
	assert.Contains(t, rep.Error, "deadline exceeded", "cancelled at its timeout")
	waitGone(t, hung) // killed and reaped before the reply
	assert.Less(t, time.Since(begin), 4*time.Second, "well before the ready timeout")
	h.assertParentServes("after three failed upgrades")
	st := ask(t, path, control.Request{Cmd: control.CmdStatus})
	require.True(t, st.OK, "the control socket still answers")
	require.NotNil(t, st.Status.Totals, "status carries the service's totals")
	assert.Equal(t, 3, st.Status.Totals.UpgradesFailed, "three upgrades failed")
	assert.Equal(t, 1, st.Status.Totals.Refusals, "one was refused")
	assert.Equal(t, 0, st.Status.Totals.Upgrades, "none succeeded")
}

// TestControlStatusChannel: a generation's status channel answers status
// only, and statusOf takes an answer only from the pid it asked (anyone
// may bind an abstract name).
func TestControlStatusChannel(t *testing.T) {
	_, path, _ := controlUpgrader(t, Options{}, nil)
	st, err := statusOf(path, os.Getpid(), ioTimeout)
	require.NoError(t, err, "this generation answers on its status channel")
	assert.Equal(t, os.Getpid(), st.PID, "with its own status")

	rep := rawAsk(t, statusChannelName(path, os.Getpid()), []byte(`{"v":1,"cmd":"upgrade"}`+"\n"), false)
	assert.Contains(t, rep.Error, "only status", "no upgrade on the status channel")

	squatter, err := listenStatusChannel(path, os.Getpid()+1)
	require.NoError(t, err, "binding another pid's name")
	defer squatter.Close()
	go func() {
		if c, err := squatter.Accept(); err == nil {
			io.WriteString(c, `{"v":1,"ok":true,"status":{"pid":1,"connections":99}}`+"\n")
			c.Close()
		}
	}()
	_, err = statusOf(path, os.Getpid()+1, ioTimeout)
	require.Error(t, err, "an answer from another process than the one asked")
	assert.Contains(t, err.Error(), "held by pid", "is refused")
}

// TestControlReplacedGeneration: requests a generation accepted just
// before it handed over are answered by it: status says draining, while
// upgrade and stop fail with ErrUpgraded's text (ask again).
func TestControlReplacedGeneration(t *testing.T) {
	h := newHarness(t, 5*time.Second, func(o *Options) { o.Control = filepath.Join(t.TempDir(), "control.sock") })
	path := h.u.opts.Control
	conns := map[string]net.Conn{}
	for _, cmd := range control.Commands {
		c, err := net.DialTimeout("unix", path, ioTimeout)
		require.NoError(t, err, "dialing before the upgrade")
		defer c.Close()
		conns[cmd] = c
	}
	require.Eventually(t, func() bool {
		return h.u.ctl.srv.Open() == len(conns)
	}, ioTimeout, time.Millisecond, "all accepted before the upgrade")
	require.NoError(t, h.u.Upgrade(context.Background()), "the upgrade")
	h.startedChild()
	for cmd, c := range conns {
		c.SetDeadline(time.Now().Add(ioTimeout))
		_, err := io.WriteString(c, `{"v":1,"cmd":"`+cmd+`"}`+"\n")
		require.NoError(t, err)
		rep, err := control.ReadReply(c)
		require.NoError(t, err, "%s is answered by the replaced generation", cmd)
		if cmd == control.CmdStatus {
			assert.Equal(t, "draining", rep.Status.State, "status says it drains")
			continue
		}
		assert.False(t, rep.OK, "%s fails", cmd)
		assert.Contains(t, rep.Error, ErrUpgraded.Error(), "%s: because it was replaced", cmd)
		assert.Equal(t, control.CodeRefused, rep.Code, "%s: refused for now: the serving generation answers", cmd)
	}
}
