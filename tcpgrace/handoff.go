package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/handoff"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// The hand-off channel (internal/handoff) joins a generation to the next
// one it started: a Unix seqpacket socket pair made by Upgrade, whose
// child's end goes with the sockets (TCPGRACE_FDS handoff=). Once the
// upgrade stands, the old generation gives the new one what it may:
// idle connections (RunHTTP, [Handover]) while it drains, then its state
// ([Options.State]) when its drain is over; then it closes its end. Each
// give is a transaction: a connection leaves the old generation only once
// the new one acknowledged it, and on any failure the old one keeps it and
// drains it as before.

// Item kinds on the channel.
const (
	itemConn  uint16 = 1 // a connection: connItem data, one fd
	itemState uint16 = 2 // the state: the bytes, or no bytes and a memfd that holds them
)

const (
	// helloWait bounds the old generation's wait for the new one's hello;
	// a new generation says it as it says ready, so only one that does
	// not speak the channel keeps it waiting.
	helloWait = time.Second
	// claimWait bounds how long the new generation waits for a server to
	// serve the listener a connection comes from (it calls Ready, then
	// RunHTTP or Serve) before it refuses the connection.
	claimWait = 2 * time.Second
	// stateWait bounds the hand-off of the state, which may happen after
	// the drain deadline passed.
	stateWait = 5 * time.Second
	// MaxState bounds what [Options.State] may return: 64 MiB. State over
	// 64 KiB travels in a memfd (Linux only).
	MaxState = 64 << 20
)

// errNoChannel is a give with no channel to give on.
var errNoChannel = errors.New("tcpgrace: no hand-off channel to the next generation")

// outChannel is this generation's end of the channel to the next one,
// from the upgrade that handed over. Its methods are safe for concurrent
// use; gives are one at a time.
type outChannel struct {
	mu   sync.Mutex
	conn *handoff.Conn  // until the giver is made
	g    *handoff.Giver // once the next generation said hello
	err  error          // why nothing more can be given
}

// give hands items over in one transaction (see handoff.Giver.Offer):
// nil when the next generation holds them all; on any error this one
// keeps them all. An error other than the next generation's refusal
// leaves nothing more to give.
func (o *outChannel) give(ctx context.Context, items []handoff.Item) error {
	if o == nil {
		return errNoChannel
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return o.err
	}
	if o.g == nil {
		hctx, cancel := context.WithTimeout(ctx, helloWait)
		g, err := handoff.NewGiver(hctx, o.conn) // closes conn on error
		cancel()
		o.conn = nil
		if err != nil {
			o.err = fmt.Errorf("tcpgrace: the next generation takes no hand-off: %w", err)
			return o.err
		}
		o.g = g
	}
	err := o.g.Offer(ctx, items)
	if err != nil && !errors.Is(err, handoff.ErrAborted) && !errors.Is(err, handoff.ErrTooLarge) {
		o.err = err
	}
	return err
}

// usable reports whether a give may still succeed.
func (o *outChannel) usable() bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err == nil
}

// close closes this end: the next generation learns that nothing more
// comes. Safe to call twice.
func (o *outChannel) close() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.g != nil {
		o.g.Close()
	} else if o.conn != nil {
		o.conn.Close()
	}
	o.g, o.conn = nil, nil
	if o.err == nil {
		o.err = errors.New("tcpgrace: the hand-off channel is closed")
	}
}

// handChannel makes the channel for the next generation and adds its end
// to files (after the mailbox; the ready pipe goes before files, see
// runChild). With no channel (socketpair failed) the upgrade goes on
// without: connections then drain here.
func (u *Upgrader) handChannel(h *handed, env *wire.Env) *handoff.Conn {
	mine, theirs, err := handoff.Pair()
	if err != nil {
		u.log.Warn("no hand-off channel: connections will drain in this generation", "err", err)
		return nil
	}
	f, err := theirs.File()
	theirs.Close()
	if err != nil {
		mine.Close()
		u.log.Warn("no hand-off channel: connections will drain in this generation", "err", err)
		return nil
	}
	env.Handoff = h.next()
	h.addFile(f)
	return mine
}

// handState gives the next generation this one's state, if this one
// handed over and has [Options.State], then closes the channel. It runs
// when the drain is over: after its own inheritance has arrived (so that
// what it passes on includes it), or ctx's end.
func (u *Upgrader) handState(ctx context.Context) {
	out := u.out.Load()
	if out == nil {
		return
	}
	defer out.close()
	if u.opts.State == nil {
		return
	}
	u.in.wait(ctx)
	it, err := stateItem(u.opts.State())
	if err != nil {
		u.log.Warn("state not handed over", "err", err)
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), stateWait)
	defer cancel()
	if err := out.give(sctx, []handoff.Item{it}); err != nil {
		closeFiles(it.Files)
		u.log.Warn("state not handed over", "err", err)
	}
}

// stateItem is the item that carries b: in its data up to handoff.MaxData
// bytes, beyond that in a memfd.
func stateItem(b []byte) (handoff.Item, error) {
	if len(b) > MaxState {
		return handoff.Item{}, fmt.Errorf("tcpgrace: state of %d bytes, more than MaxState (%d)", len(b), MaxState)
	}
	if len(b) <= handoff.MaxData {
		return handoff.Item{Kind: itemState, Data: b}, nil
	}
	f, err := memFile("tcpgrace-state", b)
	if err != nil {
		return handoff.Item{}, fmt.Errorf("tcpgrace: state of %d bytes: %w", len(b), err)
	}
	return handoff.Item{Kind: itemState, Files: []*os.File{f}}, nil
}
