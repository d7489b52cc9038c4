package takeover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/handoff"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Taken is what a taker received: the hand-over's value placed on the
// fds it now owns, and the control connection, which it keeps open until
// it leaves (the giver reads its end of file as the taker's exit).
type Taken struct {
	Env   *wire.Env             // the sockets and channels, on this process's fds
	Offer control.TakeoverOffer // who gave them
	conn  *net.UnixConn
	rest  []byte // bytes read past the first reply
}

// ReplyError is a giver's refusal or failure, as its reply said.
type ReplyError struct {
	Path string // the control socket asked
	Code string // the reply's code (control.CodeRefused, ...)
	Text string // the reply's error
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("tcpgrace: takeover: %s answered %s: %s", e.Path, e.Code, e.Text)
}

// Take asks the server on the control socket at path for its sockets and
// receives them. ctx bounds the exchange (and ReplyTimeout each wait).
// [ErrNobody] means nothing listens there; a [*ReplyError] that the
// server refused or failed. On error nothing is held: every fd received
// is closed and the giver keeps serving with what it has.
func Take(ctx context.Context, path string) (*Taken, error) {
	conn, err := dial(ctx, path)
	if err != nil {
		return nil, err
	}
	t := &Taken{conn: conn}
	if err := t.take(ctx, path); err != nil {
		conn.Close()
		return nil, err
	}
	return t, nil
}

// dial connects to path and checks that root or this process's uid
// listens there.
func dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNobody, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("tcpgrace: takeover: %w", err)
	}
	pid, uid, err := control.PeerCred(c)
	if err == nil && uid != 0 && uid != uint32(os.Geteuid()) {
		err = fmt.Errorf("%s is held by uid %d (pid %d), neither root nor uid %d: not taking its sockets", path, uid, pid, os.Geteuid())
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("tcpgrace: takeover: %w", err)
	}
	return c.(*net.UnixConn), nil
}

// take sends the request, reads the first reply with its channel, and
// receives the transaction.
func (t *Taken) take(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, ReplyTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	t.conn.SetDeadline(deadline)
	defer t.conn.SetDeadline(time.Time{})
	line, _ := json.Marshal(control.Request{V: control.Version, Cmd: control.CmdTakeover})
	_, werr := t.conn.Write(append(line, '\n'))
	// A server that refuses without reading (a uid it does not let in)
	// has replied and closed before our write: its reply still counts.
	rep, ch, err := t.readFirst()
	if err != nil && werr != nil {
		return fmt.Errorf("tcpgrace: takeover: asking %s: %w", path, werr)
	}
	if err != nil {
		return fmt.Errorf("tcpgrace: takeover: %s: %w", path, err)
	}
	if !rep.OK {
		ch.Close()
		return &ReplyError{Path: path, Code: rep.Code, Text: rep.Error}
	}
	if rep.Takeover == nil || ch == nil {
		ch.Close()
		return fmt.Errorf("tcpgrace: takeover: %s: a reply without the offer or without the channel's fd", path)
	}
	t.Offer = *rep.Takeover
	env, err := receive(ctx, ch)
	if err != nil {
		return fmt.Errorf("tcpgrace: takeover: from %s (pid %d): %w", path, t.Offer.PID, err)
	}
	t.Env = env
	return nil
}

// readFirst reads the first reply line and the fd that came with it (nil
// if none). Bytes past the line are kept for Verdict.
func (t *Taken) readFirst() (*control.Reply, *os.File, error) {
	var ch *os.File
	var buf []byte
	b := make([]byte, 4096)
	oob := make([]byte, oobSize)
	for {
		n, oobn, _, _, err := t.conn.ReadMsgUnix(b, oob)
		buf = append(buf, b[:n]...)
		f, ferr := filesOf(oob[:oobn], ch)
		if ferr != nil {
			ch.Close()
			return nil, nil, ferr
		}
		ch = f
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			t.rest = append([]byte(nil), buf[i+1:]...)
			rep, err := control.ReadReply(bytes.NewReader(buf[:i+1]))
			if err != nil {
				ch.Close()
			}
			return rep, ch, err
		}
		if err != nil || len(buf) > control.MaxReplyLen {
			ch.Close()
			return nil, nil, fmt.Errorf("reading the reply (%d bytes): %w", len(buf), errOr(err, io.ErrShortBuffer))
		}
	}
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// receive takes the one transaction on the channel ch (which it closes)
// and returns the value placed on fds of this process.
func receive(ctx context.Context, ch *os.File) (*wire.Env, error) {
	c, err := handoff.NewConn(ch)
	ch.Close()
	if err != nil {
		return nil, err
	}
	tk, err := handoff.NewTaker(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("the hand-off channel's hello: %w", err)
	}
	defer tk.Close()
	items, err := tk.Receive(ctx, check)
	if err != nil {
		return nil, err
	}
	fds, err := own(items[0].Files)
	if err != nil {
		return nil, err
	}
	env, err := wire.DecodeTaken(string(items[0].Data), fds)
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return env, nil
}

// check is the taker's vote: one item of KindSockets whose value names
// exactly its files, each of which is what the value says it is.
func check(items []handoff.Item) error {
	if len(items) != 1 || items[0].Kind != KindSockets {
		return fmt.Errorf("want one item of kind %#x, got %d items", KindSockets, len(items))
	}
	fds := make([]int, len(items[0].Files))
	for i, f := range items[0].Files {
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("file %d: %w", i, err)
		}
		rc.Control(func(s uintptr) { fds[i] = int(s) })
	}
	env, err := wire.DecodeTaken(string(items[0].Data), fds)
	if err != nil {
		return err
	}
	return env.CheckFDs()
}

// Verdict waits for the giver's word after this taker said ready: nil
// for [Confirmed] (serve), an error wrapping [ErrGaveUp] with the giver's
// reason when it replied with a failure (do not serve), [ErrGiverGone]
// when its connection ended without a word (it died: serve alone).
// timeout bounds the wait.
func (t *Taken) Verdict(timeout time.Duration) error {
	t.conn.SetReadDeadline(time.Now().Add(timeout))
	defer t.conn.SetReadDeadline(time.Time{})
	r := io.MultiReader(bytes.NewReader(t.rest), t.conn)
	var b [1]byte
	n, err := io.ReadFull(r, b[:])
	switch {
	case n == 1 && b[0] == Confirmed:
		return nil
	case n == 1:
		rep, rerr := control.ReadReply(io.MultiReader(bytes.NewReader(b[:]), r))
		if rerr != nil {
			return fmt.Errorf("%w: its word was no confirmation: %w", ErrGaveUp, rerr)
		}
		return fmt.Errorf("%w: %s", ErrGaveUp, rep.Error)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return ErrGiverGone
	}
	return fmt.Errorf("%w: no word within %v: %w", ErrGaveUp, timeout, err)
}

// Close closes the control connection: the giver, if it still watches,
// reads it as this taker's exit.
func (t *Taken) Close() error { return t.conn.Close() }
