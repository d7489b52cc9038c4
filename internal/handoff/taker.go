package handoff

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
)

// Taker is the side of a channel that takes items over (the new
// generation). It owns its [Conn]. One goroutine at a time.
type Taker struct {
	c       *Conn
	version uint16
	last    uint64 // the last transaction id seen
	broken  error
}

// NewTaker says hello on c and returns the taker once both sides agreed
// on a version, like [NewGiver]; on error it closes c.
func NewTaker(ctx context.Context, c *Conn) (*Taker, error) {
	v, err := hello(ctx, c, "taker", Version, Version)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Taker{c: c, version: v}, nil
}

// Version is the version both sides agreed on.
func (t *Taker) Version() uint16 { return t.version }

// Close closes the channel; a giver waiting in a transaction then keeps
// what it offered.
func (t *Taker) Close() error { return t.c.Close() }

// Receive takes one transaction: it reads the items up to the giver's
// commit?, asks accept (nil accepts everything), answers prepared or
// abort, and on the giver's commit sends its ack and returns the items,
// whose files are then the caller's (close-on-exec). It blocks until
// then, ctx's end or an error.
//
// accept sees the items before they are the caller's: it must not keep
// or close their files. If it returns an error, Receive answers abort with
// the error's text, closes the files and returns an [*AbortError] (by the
// taker); the channel stays usable. An abort by the giver is an
// *AbortError too. Every other failure (the giver gone, a malformed
// frame, ctx's end in the middle of a transaction) is a [*PhaseError]:
// Receive has closed every file it received and the channel. When ctx
// ends before the first frame of a transaction, the error is ctx's and
// the channel stays usable.
func (t *Taker) Receive(ctx context.Context, accept func([]Item) error) ([]Item, error) {
	if t.broken != nil {
		return nil, fmt.Errorf("%w: %v", ErrBroken, t.broken)
	}
	done := t.c.watch(ctx)
	defer done()
	col := &collector{last: t.last}
	items, err := col.run(t.c)
	if col.txn != 0 {
		t.last = col.txn
	}
	if err == nil {
		items, err = t.vote(col.txn, items, accept)
	}
	if err == nil || isAbort(err) {
		return items, err
	}
	why := cause(ctx, unphase(err))
	if col.txn == 0 && ended(why) {
		return nil, why // no transaction began: the channel is as it was
	}
	err = &PhaseError{Side: "taker", Txn: col.txn, Phase: phaseOf(err), Err: why}
	t.broken = err
	t.c.Close()
	return nil, err
}

func isAbort(err error) bool {
	_, ok := err.(*AbortError)
	return ok
}

// vote asks accept, answers, waits for the giver's decision and acks a
// commit. On every way out but success it closes the items' files.
func (t *Taker) vote(txn uint64, items []Item, accept func([]Item) error) ([]Item, error) {
	var err error
	defer func() {
		if err != nil {
			closeItems(items)
		}
	}()
	if accept != nil {
		if aerr := accept(items); aerr != nil {
			if err = t.c.send(Header{Kind: KindAbort, Txn: txn}, reason(aerr.Error()), nil); err != nil {
				return nil, &phased{PhaseVote, err}
			}
			err = &AbortError{By: "taker", Txn: txn, Reason: aerr.Error()}
			return nil, err
		}
	}
	if err = t.c.send(Header{Kind: KindPrepared, Txn: txn}, nil, nil); err != nil {
		return nil, &phased{PhaseVote, err}
	}
	fr, err := expect(t.c, txn, KindCommit, KindAbort)
	if err != nil {
		return nil, &phased{PhaseCommit, err}
	}
	if fr.h.Kind == KindAbort {
		err = &AbortError{By: "giver", Txn: txn, Reason: string(fr.payload)}
		return nil, err
	}
	if err = t.c.send(Header{Kind: KindAck, Txn: txn}, nil, nil); err != nil {
		return nil, &phased{PhaseAck, err}
	}
	return items, nil
}

func closeItems(items []Item) {
	for _, it := range items {
		for _, f := range it.Files {
			f.Close()
		}
	}
}

// collector joins the frames of one transaction into items.
type collector struct {
	last   uint64 // the previous transaction's id
	txn    uint64 // this one's, once its first frame arrived
	items  []Item
	fds    [][]int
	all    []int // every fd received, to close on error
	more   bool  // the last item goes on in the next frame
	nfds   int
	nbytes int
}

// run reads frames up to commit? and returns the items, their files
// made of the fds received; on error it has closed every fd.
func (col *collector) run(c *Conn) ([]Item, error) {
	for {
		fr, err := c.recv()
		if err == nil {
			col.all = append(col.all, fr.fds...)
			var end bool
			if end, err = col.add(fr); end && err == nil {
				return col.files(), nil
			}
		}
		if err != nil {
			closeFDs(col.all)
			return nil, &phased{PhasePrepare, err}
		}
	}
}

// add takes one frame; end reports the commit? that closes the items.
func (col *collector) add(fr frame) (end bool, err error) {
	if col.txn == 0 && fr.h.Txn <= col.last {
		return false, malformed("transaction id", "%d, not above the previous %d", fr.h.Txn, col.last)
	}
	if col.txn != 0 && fr.h.Txn != col.txn {
		return false, malformed("transaction id", "%d in the middle of transaction %d", fr.h.Txn, col.txn)
	}
	col.txn = fr.h.Txn
	switch {
	case fr.h.Kind == KindItem && col.more:
		return false, col.addFDs(fr)
	case fr.h.Kind == KindItem:
		return false, col.addItem(fr)
	case fr.h.Kind == KindCommitQ && !col.more:
		return true, col.checkCount(fr.payload)
	}
	return false, malformed("kind", "a %s frame in transaction %d while items come in", kindName(fr.h.Kind), col.txn)
}

// addItem starts an item with a frame's kind, data and fds.
func (col *collector) addItem(fr frame) error {
	if len(fr.payload) < 2 {
		return malformed("payload length", "%d bytes: an item frame starts with its 2-byte kind", len(fr.payload))
	}
	if len(col.items) == MaxItems {
		return malformed("kind", "more than %d items in transaction %d", MaxItems, col.txn)
	}
	col.nbytes += len(fr.payload) - 2
	if col.nbytes > MaxBytes {
		return malformed("payload length", "more than %d bytes of data in transaction %d", MaxBytes, col.txn)
	}
	col.items = append(col.items, Item{Kind: binary.BigEndian.Uint16(fr.payload), Data: fr.payload[2:]})
	col.fds = append(col.fds, nil)
	return col.addFDs(fr)
}

// addFDs adds a frame's fds to the last item. A continuation frame
// carries fds and no payload.
func (col *collector) addFDs(fr frame) error {
	if col.more && (len(fr.payload) != 0 || len(fr.fds) == 0) {
		return malformed("payload length", "a continuation frame with %d bytes and %d fds, want 0 bytes and fds", len(fr.payload), len(fr.fds))
	}
	col.nfds += len(fr.fds)
	if col.nfds > MaxFDs {
		return malformed("fd count", "more than %d fds in transaction %d", MaxFDs, col.txn)
	}
	last := len(col.fds) - 1
	col.fds[last] = append(col.fds[last], fr.fds...)
	col.more = fr.h.Flags&FlagMore != 0
	return nil
}

// checkCount checks commit?'s counts against what arrived.
func (col *collector) checkCount(p []byte) error {
	if len(p) != 8 {
		return malformed("payload length", "a commit? of %d bytes, want 8", len(p))
	}
	items, fds := binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
	if uint64(items) != uint64(len(col.items)) || uint64(fds) != uint64(col.nfds) {
		return malformed("commit?", "%d items and %d fds announced, %d and %d arrived", items, fds, len(col.items), col.nfds)
	}
	return nil
}

// files gives each item its files, made of the fds received.
func (col *collector) files() []Item {
	for i := range col.items {
		for j, fd := range col.fds[i] {
			name := fmt.Sprintf("tcpgrace-handoff-%d-%d-%d", col.txn, i, j)
			col.items[i].Files = append(col.items[i].Files, os.NewFile(uintptr(fd), name))
		}
	}
	return col.items
}
