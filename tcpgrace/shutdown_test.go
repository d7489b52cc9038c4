//go:build linux

package tcpgrace

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// connect dials ln and returns the client's end and the end ln accepted.
func connect(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), ioTimeout)
	require.NoError(t, err, "dialing the listener should succeed")
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err, "the listener should accept our connection")
	return client, server
}

// serveUntilClientCloses is a handler: it reads until the client closes,
// then closes its end. The channel gets the read error (nil on EOF).
func serveUntilClientCloses(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		c.Close()
		done <- err
	}()
	return done
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(ioTimeout):
		require.FailNow(t, what+" should have returned by now")
		return nil
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(ioTimeout):
		require.FailNow(t, what+" should be closed by now")
	}
}

// assertClosedByServer requires that the server end of c was closed: the
// client reads EOF.
func assertClosedByServer(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(ioTimeout)))
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "%s: the client should read EOF", msg)
}

func TestShutdownWaitsForOpenConnections(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	client, server := connect(t, ln)
	handler := serveUntilClientCloses(server)
	// A connection closed before Shutdown is not waited for.
	c2, s2 := connect(t, ln)
	s2.Close()
	c2.Close()

	shutdown := make(chan error, 1)
	go func() { shutdown <- u.Shutdown(context.Background()) }()
	waitClosed(t, u.Exit(), "Exit, closed by Shutdown before it waits for connections,")
	select {
	case err := <-shutdown:
		require.Failf(t, "Shutdown should wait for the open connection", "it returned %v", err)
	default:
	}
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed, "Shutdown should have closed the listener")
	_, err = client.Write([]byte("still served"))
	assert.NoError(t, err, "the open connection should still work while Shutdown waits")

	assert.Equal(t, Stats{Active: 1, Accepted: 2}, u.Stats(), "while Shutdown waits, one of two accepted connections is open")

	require.NoError(t, client.Close())
	assert.NoError(t, waitErr(t, shutdown, "Shutdown"), "Shutdown should return nil once the last connection is closed")
	assert.NoError(t, waitErr(t, handler, "the handler"), "the handler should have seen a clean EOF")
	assert.Equal(t, Stats{Active: 0, Accepted: 2}, u.Stats(), "after the drain no connection is open and none was forced")
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	client, server := connect(t, ln)
	handler := serveUntilClientCloses(server)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = u.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Shutdown should give up at ctx's deadline and say so")
	assertClosedByServer(t, client, "after the drain deadline")
	assert.ErrorIs(t, waitErr(t, handler, "the handler"), net.ErrClosed, "the handler's connection should have been closed under it")
	assert.Equal(t, Stats{Active: 0, Accepted: 1, ForceClosed: 1}, u.Stats(), "the connection should count as force-closed")
}

func TestCloseClosesConnectionsAtOnce(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ln, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	sock := filepath.Join(t.TempDir(), "s.sock")
	ctl, err := u.Listen("ctl", "unix", sock)
	require.NoError(t, err)
	client, server := connect(t, ln)
	handler := serveUntilClientCloses(server)
	uclient, userver := connect(t, ctl)
	uhandler := serveUntilClientCloses(userver)

	closed := make(chan error, 1)
	go func() { closed <- u.Close() }()
	assert.NoError(t, waitErr(t, closed, "Close"), "Close should not wait for open connections")
	waitClosed(t, u.Exit(), "Exit")
	assertClosedByServer(t, client, "after Close (tcp)")
	assertClosedByServer(t, uclient, "after Close (unix)")
	assert.ErrorIs(t, waitErr(t, handler, "the tcp handler"), net.ErrClosed, "Close should close the tcp connection")
	assert.ErrorIs(t, waitErr(t, uhandler, "the unix handler"), net.ErrClosed, "Close should close the unix connection")
}

func TestShutdownAndCloseTwice(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	_, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	ctx := context.Background()
	assert.NoError(t, u.Shutdown(ctx), "the first Shutdown should succeed")
	assert.NoError(t, u.Shutdown(ctx), "a second Shutdown should be harmless")
	assert.NoError(t, u.Close(), "Close after Shutdown should be harmless")
	assert.NoError(t, u.Close(), "a second Close should be harmless")
	waitClosed(t, u.Exit(), "Exit")

	v := newColdUpgrader(t, Options{})
	assert.NoError(t, v.Close(), "the first Close should succeed")
	assert.NoError(t, v.Close(), "a second Close should be harmless")
	assert.NoError(t, v.Shutdown(ctx), "Shutdown after Close should be harmless")
}

func TestClosedUpgraderRefusesWork(t *testing.T) {
	for _, stop := range []struct {
		name string
		fn   func(*Upgrader) error
	}{
		{"Shutdown", func(u *Upgrader) error { return u.Shutdown(context.Background()) }},
		{"Close", func(u *Upgrader) error { return u.Close() }},
	} {
		t.Run(stop.name, func(t *testing.T) {
			u := newColdUpgrader(t, Options{Executable: filepath.Join(t.TempDir(), "missing")})
			web, err := u.Listen("web", "tcp4", loopback)
			require.NoError(t, err)
			require.NoError(t, u.Ready())
			require.NoError(t, stop.fn(u))

			_, err = u.Listen("web", "tcp4", loopback)
			assert.ErrorIs(t, err, ErrClosed, "Listen of a registered name after %s should fail", stop.name)
			_, err = u.Listen("other", "tcp4", loopback)
			assert.ErrorIs(t, err, ErrClosed, "Listen of a new name after %s should fail", stop.name)
			_, err = u.ListenPacket("dns", "udp4", loopback)
			assert.ErrorIs(t, err, ErrClosed, "ListenPacket after %s should fail", stop.name)
			err = u.Upgrade(context.Background())
			assert.ErrorIs(t, err, ErrClosed, "Upgrade after %s should fail", stop.name)
			assert.NotErrorIs(t, err, ErrChildFailed, "Upgrade after %s should not try to start a child", stop.name)
			_, err = web.Accept()
			assert.ErrorIs(t, err, net.ErrClosed, "%s should have closed the listener", stop.name)
			assert.NoError(t, web.Close(), "closing a listener that %s closed should return nil", stop.name)
		})
	}
}

func TestUpgradeBeforeReady(t *testing.T) {
	u := newColdUpgrader(t, Options{Executable: filepath.Join(t.TempDir(), "missing")})
	_, err := u.Listen("web", "tcp4", loopback)
	require.NoError(t, err)
	err = u.Upgrade(context.Background())
	assert.ErrorIs(t, err, ErrNotReady, "Upgrade before Ready should fail")
	assert.NotErrorIs(t, err, ErrChildFailed, "Upgrade before Ready should not try to start a child")
	_, err = u.Listen("web", "tcp4", loopback)
	assert.NoError(t, err, "a refused Upgrade should leave the Upgrader serving")
}

func TestUpgradeWithDoneContext(t *testing.T) {
	u := newColdUpgrader(t, Options{Executable: filepath.Join(t.TempDir(), "missing")})
	require.NoError(t, u.Ready())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := u.Upgrade(ctx)
	assert.ErrorIs(t, err, context.Canceled, "Upgrade with a cancelled ctx should fail with ctx's error")
	assert.NotErrorIs(t, err, ErrChildFailed, "Upgrade with a cancelled ctx should not try to start a child")
}

func TestReadyTwice(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	require.NoError(t, u.Ready(), "the first Ready should succeed")
	assert.ErrorIs(t, u.Ready(), ErrAlreadyReady, "a second Ready should fail")
	assert.False(t, u.inh.HasParent(), "a cold start has no parent")
	assert.Equal(t, 1, u.Generation(), "a cold start is generation 1")
}

func TestFailWithoutParent(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	assert.NoError(t, u.Fail(errors.New("no parent to tell")), "Fail without a parent should do nothing")
}

// TestUpgradeLimitsGenerations runs Upgrade in a generation whose parent
// (here: this very process, alive) and an older one (reaped) may still
// be draining.
func TestUpgradeLimitsGenerations(t *testing.T) {
	dead := reapedChild(t).pid()
	files, err := wire.Open(&wire.Env{Source: wire.EnvFDs, Writer: os.Getpid(), Generation: 3,
		ReadyFD: -1, Older: []int{dead}})
	require.NoError(t, err)
	u, err := newUpgrader(Options{Executable: filepath.Join(t.TempDir(), "missing"), MaxGenerations: 2}, files)
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	require.NoError(t, u.Ready())

	err = u.Upgrade(context.Background())
	assert.ErrorIs(t, err, ErrTooManyGenerations, "a live parent, us and the next one are 3 generations, over a limit of 2")
	assert.NotErrorIs(t, err, ErrChildFailed, "an Upgrade over the limit should not try to start a child")
	assert.Contains(t, err.Error(), strconv.Itoa(os.Getpid()), "the error should name the generation still draining")
	_, err = u.Listen("web", "tcp4", loopback)
	assert.NoError(t, err, "an Upgrade refused for the limit should leave the Upgrader serving")

	u.opts.MaxGenerations = 3 // no Upgrade runs: no race
	err = u.Upgrade(context.Background())
	assert.ErrorIs(t, err, ErrChildFailed, "with a limit of 3 the Upgrade should go on (the reaped older one does not count)")
}
