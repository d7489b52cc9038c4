package handoff

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
)

// Item is what a transaction carries: a kind the callers agree on, data
// (at most [MaxData] bytes) and files (fds) that go with it.
type Item struct {
	Kind  uint16
	Data  []byte
	Files []*os.File
}

// hello sends our version range [lo, hi] on c, reads the peer's and
// returns the version both speak: the lower of the two maxima, if it is
// in both ranges; otherwise an error that unwraps to ErrVersion.
func hello(ctx context.Context, c *Conn, side string, lo, hi uint16) (uint16, error) {
	done := c.watch(ctx)
	defer done()
	fail := func(err error) (uint16, error) {
		return 0, &PhaseError{Side: side, Phase: PhaseHello, Err: cause(ctx, err)}
	}
	if err := c.send(Header{Kind: KindHello}, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, lo), hi), nil); err != nil {
		return fail(err)
	}
	fr, err := c.recv()
	if err != nil {
		return fail(err)
	}
	if fr.h.Kind != KindHello || fr.h.Txn != 0 || len(fr.payload) < 4 {
		closeFDs(fr.fds)
		return fail(malformed("kind", "a %s frame of transaction %d with %d bytes, want a hello of transaction 0 with 4 or more",
			kindName(fr.h.Kind), fr.h.Txn, len(fr.payload)))
	}
	plo, phi := binary.BigEndian.Uint16(fr.payload), binary.BigEndian.Uint16(fr.payload[2:])
	v := min(hi, phi)
	if v < lo || v < plo {
		return fail(&FrameError{Field: "hello", Err: ErrVersion,
			Reason: fmt.Sprintf("the peer speaks versions %d to %d, this build %d to %d", plo, phi, lo, hi)})
	}
	return v, nil
}
