package takeover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/handoff"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// giver is a control server at a temp path whose takeover handler gives
// the files made by files() under value, then does after with the
// connection; Give's error arrives on gave.
type giver struct {
	path string
	gave chan error
}

func startGiver(t *testing.T, files func() ([]*os.File, string), after func(net.Conn) *control.Reply) *giver {
	t.Helper()
	g := &giver{path: filepath.Join(t.TempDir(), "ctl"), gave: make(chan error, 1)}
	ln, err := net.Listen("unix", g.path)
	require.NoError(t, err)
	srv := control.NewServer(ln, control.ServerOptions{Name: "test", Logger: slog.New(slog.DiscardHandler), Handler: func(req control.Request, _ control.Peer, conn net.Conn) *control.Reply {
		if req.Cmd != control.CmdTakeover {
			return control.FailReply(errors.New("want takeover"))
		}
		fs, value := files()
		err := Give(context.Background(), conn, control.TakeoverOffer{PID: os.Getpid(), Generation: 2}, value, fs)
		g.gave <- err
		if err != nil {
			for _, f := range fs {
				f.Close()
			}
			return control.FailReply(err)
		}
		return after(conn)
	}})
	srv.Start()
	t.Cleanup(func() { srv.Close(context.Background()); srv.Wait(); ln.Close() })
	return g
}

// sockets is a readiness pipe's write end and a loopback listener, as a
// giver hands them, with their value; r is the pipe's read end.
func sockets(t *testing.T) (files []*os.File, value string, r *os.File, addr string) {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	lf, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	env := &wire.Env{Generation: 2, ReadyFD: 3, Entries: []wire.Entry{{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:0"}}}
	return []*os.File{w, lf}, env.Encode(os.Getpid()), r, ln.Addr().String()
}

// TestTakeGive: the taker receives the giver's listener and readiness
// pipe on fds of its own, serves on the listener, says ready on the pipe
// and gets the giver's confirmation; the giver's copies are closed.
func TestTakeGive(t *testing.T) {
	var r *os.File
	var addr string
	var given []*os.File
	g := startGiver(t, func() ([]*os.File, string) {
		var fs []*os.File
		var v string
		fs, v, r, addr = sockets(t)
		given = fs
		return fs, v
	}, func(conn net.Conn) *control.Reply {
		require.NoError(t, WaitReady(context.Background(), r, 5*time.Second))
		require.NoError(t, Confirm(conn))
		return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{PID: 1}}
	})
	tk, err := Take(context.Background(), g.path)
	require.NoError(t, err)
	defer tk.Close()
	require.NoError(t, <-g.gave)
	for _, f := range given {
		assert.ErrorIs(t, f.Close(), os.ErrClosed, "Give closed the giver's copy %s", f.Name())
	}
	assert.Equal(t, os.Getpid(), tk.Offer.PID)
	files, err := wire.Open(tk.Env)
	require.NoError(t, err, "what arrived passes Open's checks")
	ln, err := files.Listener("web", "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c.Close()
	a, err := ln.Accept()
	require.NoError(t, err, "the taker accepts on the giver's listener")
	a.Close()
	require.NoError(t, files.Ready())
	require.NoError(t, tk.Verdict(5*time.Second), "the giver confirmed")
}

// TestVerdicts: a failure reply instead of the confirmation is the
// giver's giving up, with its reason; an end of file is the giver gone.
func TestVerdicts(t *testing.T) {
	for _, c := range []struct {
		name  string
		after func(net.Conn) *control.Reply
		want  error
		text  string
	}{
		{"gave up", func(net.Conn) *control.Reply {
			return control.FailReply(errors.New("ready timeout passed"))
		}, ErrGaveUp, "ready timeout passed"},
		{"gone", func(conn net.Conn) *control.Reply {
			conn.Close()
			return nil
		}, ErrGiverGone, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGiver(t, func() ([]*os.File, string) {
				fs, v, _, _ := sockets(t)
				return fs, v
			}, c.after)
			tk, err := Take(context.Background(), g.path)
			require.NoError(t, err)
			defer tk.Close()
			err = tk.Verdict(5 * time.Second)
			require.ErrorIs(t, err, c.want)
			assert.Contains(t, err.Error(), c.text)
		})
	}
}

// TestTakerRefusesBadFD: a value that calls a pipe a TCP listener is
// refused in the vote: the giver's Give fails with the taker's reason
// (naming the fd) and keeps its files; the taker closed what it received
// (once the giver closes its own copies, the pipes read end of file).
func TestTakerRefusesBadFD(t *testing.T) {
	var readEnds []*os.File
	g := startGiver(t, func() ([]*os.File, string) {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		pr, pw, err := os.Pipe()
		require.NoError(t, err)
		readEnds = []*os.File{r, pr}
		env := &wire.Env{Generation: 2, ReadyFD: 3, Entries: []wire.Entry{{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:0"}}}
		return []*os.File{w, pw}, env.Encode(os.Getpid())
	}, func(net.Conn) *control.Reply {
		return control.FailReply(errors.New("the taker took a pipe for a listener"))
	})
	_, err := Take(context.Background(), g.path)
	require.Error(t, err)
	gerr := <-g.gave
	var ae *handoff.AbortError
	require.ErrorAs(t, gerr, &ae, "the giver hears the taker's refusal")
	assert.Contains(t, ae.Reason, `name "web" fd `)
	assert.Contains(t, ae.Reason, "not a socket")
	assert.Contains(t, err.Error(), "not a socket")
	for _, r := range readEnds { // the handler closed the giver's copies after Give failed
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.Read(make([]byte, 1))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.EOF, "no copy of the write end is left open: the taker closed what it received")
		r.Close()
	}
}

// TestTakeRefusedAndNobody: a refusal reply is a *ReplyError with its
// code; no socket at the path is ErrNobody.
func TestTakeRefusedAndNobody(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := control.NewServer(ln, control.ServerOptions{Name: "test", Logger: slog.New(slog.DiscardHandler), Handler: func(control.Request, control.Peer, net.Conn) *control.Reply {
		return control.RefuseReply(errors.New("an upgrade is already in progress"))
	}})
	srv.Start()
	defer func() { srv.Close(context.Background()); srv.Wait(); ln.Close() }()
	_, err = Take(context.Background(), path)
	var re *ReplyError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, control.CodeRefused, re.Code)
	assert.Contains(t, err.Error(), "an upgrade is already in progress")

	_, err = Take(context.Background(), filepath.Join(t.TempDir(), "none"))
	assert.ErrorIs(t, err, ErrNobody)
	assert.ErrorIs(t, err, syscall.ENOENT)
}
