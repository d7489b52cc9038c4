package tcpgrace

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/handoff"
)

// Handover gives c, a connection from one of the Upgrader's listeners, to
// the next generation, which serves it from then on: its [Server.Serve]
// handler gets it from the same listener, and [Resumed] gives that handler
// unread and state. A handler calls it at a message boundary it knows,
// once its ctx is done after an upgrade: unread holds the bytes it has
// read from c and not used (a partial message, what its buffer holds),
// state what the next handler needs to go on (a session, a position),
// together at most 64 KiB. Nothing may read or write c meanwhile.
//
// It blocks until the next generation has taken c, refused it or failed,
// or ctx ends. On nil, c is closed here and belongs to the next
// generation: return without touching it. On an error that wraps
// [ErrNotHandedOver] (no next generation takes connections: this
// generation stops without an upgrade, the next one refused or died,
// [Options.DrainOnly]; or c is not a registry connection or too much data
// goes with it), c stays here, as it was, and the handler serves it on.
func Handover(ctx context.Context, c net.Conn, unread, state []byte) error {
	t := trackedOf(c)
	if t == nil {
		return fmt.Errorf("%w: %T is not a connection of a tcpgrace listener", ErrNotHandedOver, c)
	}
	u := t.u
	out := u.out.Load()
	if u.opts.DrainOnly || !out.usable() {
		return fmt.Errorf("%w: no next generation takes connections", ErrNotHandedOver)
	}
	sc, ok := t.Conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%w: %T has no file descriptor", ErrNotHandedOver, t.Conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotHandedOver, err)
	}
	f, err := dupConn(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotHandedOver, err)
	}
	item := handoff.Item{Kind: itemConn, Data: connItem{name: t.name, unread: unread, state: state}.encode(), Files: []*os.File{f}}
	if err := out.give(ctx, []handoff.Item{item}); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrNotHandedOver, err)
	}
	u.countMoved(1)
	c.Close()
	return nil
}

// Resumed returns what the previous generation's handler gave [Handover]
// with c: ok is true if c was handed over, false for a connection
// accepted here. It does not block.
func Resumed(c net.Conn) (unread, state []byte, ok bool) {
	t := trackedOf(c)
	if t == nil || !t.resumed {
		return nil, nil, false
	}
	return t.unread, t.state, true
}
