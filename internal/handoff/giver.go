package handoff

import (
	"context"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Giver is the side of a channel that hands items over (the old
// generation). It owns its [Conn]. One goroutine at a time.
type Giver struct {
	c       *Conn
	version uint16
	txn     uint64
	broken  error
}

// NewGiver says hello on c and returns the giver once both sides agreed
// on a version. It blocks until the peer's hello, ctx's end or an error;
// on error it closes c, and an error that unwraps to ErrVersion means a
// peer of another version: the caller keeps what it holds.
func NewGiver(ctx context.Context, c *Conn) (*Giver, error) {
	v, err := hello(ctx, c, "giver", Version, Version)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Giver{c: c, version: v}, nil
}

// Version is the version both sides agreed on.
func (g *Giver) Version() uint16 { return g.version }

// Close closes the channel; a taker waiting in a transaction then lets go
// of what it received.
func (g *Giver) Close() error { return g.c.Close() }

// Offer hands items over in one transaction: it sends them (prepare),
// asks commit?, and on the taker's prepared sends commit and waits for
// its ack. It blocks until then, ctx's end or an error.
//
// On nil the taker holds every item and Offer has closed the items'
// files. On any error Offer has closed none: the caller keeps them all.
// An [*AbortError] (ErrAborted) is the taker's refusal, with its reason;
// the channel stays usable. Items over the limits give ErrTooLarge before
// anything is sent. Every other error is a [*PhaseError] naming the
// phase; Offer has then closed the channel, so that the taker lets go of
// what it received. The one case where both sides may hold the files is a
// [PhaseAck] error: the commit went out but no ack came back in time, so
// the taker may or may not have taken them.
//
// The caller must not close the items' files during Offer.
func (g *Giver) Offer(ctx context.Context, items []Item) error {
	if g.broken != nil {
		return fmt.Errorf("%w: %v", ErrBroken, g.broken)
	}
	fds, err := checkItems(items)
	if err != nil {
		return err
	}
	done := g.c.watch(ctx)
	defer done()
	g.txn++
	if err := g.transact(ctx, items, fds); err != nil {
		if _, refused := err.(*AbortError); refused {
			return err
		}
		err = &PhaseError{Side: "giver", Txn: g.txn, Phase: phaseOf(err), Err: cause(ctx, unphase(err))}
		g.broken = err
		g.c.Close()
		return err
	}
	for _, it := range items {
		for _, f := range it.Files {
			f.Close()
		}
	}
	return nil
}

// phased is an error in a phase, before it becomes a *PhaseError.
type phased struct {
	phase string
	err   error
}

func (p *phased) Error() string { return p.phase + ": " + p.err.Error() }

func phaseOf(err error) string {
	if p, ok := err.(*phased); ok {
		return p.phase
	}
	return PhasePrepare
}

func unphase(err error) error {
	if p, ok := err.(*phased); ok {
		return p.err
	}
	return err
}

// transact runs one transaction of Offer.
func (g *Giver) transact(ctx context.Context, items []Item, fds [][]int) error {
	nfds := 0
	for i, it := range items {
		if err := g.sendItem(it, fds[i]); err != nil {
			return &phased{PhasePrepare, err}
		}
		nfds += len(fds[i])
	}
	q := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(len(items))), uint32(nfds))
	if err := g.c.send(Header{Kind: KindCommitQ, Txn: g.txn}, q, nil); err != nil {
		return &phased{PhasePrepare, err}
	}
	fr, err := g.expect(KindPrepared, KindAbort)
	if err != nil {
		return &phased{PhaseVote, err}
	}
	if fr.h.Kind == KindAbort {
		return &AbortError{By: "taker", Txn: g.txn, Reason: string(fr.payload)}
	}
	if ctx.Err() != nil {
		// Too late to commit: abort, so that the taker lets go at once.
		_ = g.c.sendNow(Header{Kind: KindAbort, Txn: g.txn}, reason("the giver's context ended: "+ctx.Err().Error()))
		return &phased{PhaseCommit, ctx.Err()}
	}
	if err := g.c.send(Header{Kind: KindCommit, Txn: g.txn}, nil, nil); err != nil {
		return &phased{PhaseCommit, err}
	}
	if _, err := g.expect(KindAck); err != nil {
		return &phased{PhaseAck, err}
	}
	return nil
}

// sendItem sends one item: its kind and data with the first
// MaxFDsPerFrame fds, then frames of fds alone, FlagMore on every frame
// but the last.
func (g *Giver) sendItem(it Item, fds []int) error {
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(it.Data)), it.Kind)
	payload = append(payload, it.Data...)
	for first := true; first || len(fds) > 0; first = false {
		n := min(len(fds), MaxFDsPerFrame)
		h := Header{Kind: KindItem, Txn: g.txn}
		if n < len(fds) {
			h.Flags = FlagMore
		}
		if err := g.c.send(h, payload, fds[:n]); err != nil {
			return err
		}
		payload, fds = nil, fds[n:]
	}
	return nil
}

// expect reads a frame of this transaction of one of the kinds.
func (g *Giver) expect(kinds ...uint16) (frame, error) {
	return expect(g.c, g.txn, kinds...)
}

// expect reads a frame of transaction txn of one of the kinds from c.
func expect(c *Conn, txn uint64, kinds ...uint16) (frame, error) {
	fr, err := c.recv()
	if err != nil {
		return frame{}, err
	}
	for _, k := range kinds {
		if fr.h.Kind == k && fr.h.Txn == txn {
			return fr, nil
		}
	}
	closeFDs(fr.fds)
	return frame{}, malformed("kind", "a %s frame of transaction %d, want %s of transaction %d",
		kindName(fr.h.Kind), fr.h.Txn, kindName(kinds[0]), txn)
}

// checkItems checks items against the limits and returns their fds.
func checkItems(items []Item) ([][]int, error) {
	if len(items) > MaxItems {
		return nil, fmt.Errorf("%w: %d items, more than %d", ErrTooLarge, len(items), MaxItems)
	}
	fds := make([][]int, len(items))
	nfds, nbytes := 0, 0
	for i, it := range items {
		if len(it.Data) > MaxData {
			return nil, fmt.Errorf("%w: item %d: %d bytes of data, more than %d", ErrTooLarge, i, len(it.Data), MaxData)
		}
		nbytes += len(it.Data)
		nfds += len(it.Files)
		for j, f := range it.Files {
			fd, err := fdOf(f)
			if err != nil {
				return nil, fmt.Errorf("tcpgrace: hand-off: item %d: file %d: %w", i, j, err)
			}
			fds[i] = append(fds[i], fd)
		}
	}
	if nfds > MaxFDs {
		return nil, fmt.Errorf("%w: %d fds, more than %d", ErrTooLarge, nfds, MaxFDs)
	}
	if nbytes > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes of data, more than %d", ErrTooLarge, nbytes, MaxBytes)
	}
	return fds, nil
}

// reason cuts an abort's reason to MaxReason bytes of valid UTF-8.
func reason(s string) []byte {
	if len(s) <= MaxReason {
		return []byte(s)
	}
	s = s[:MaxReason]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return []byte(s)
}
