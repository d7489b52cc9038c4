package handoff

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHeaderBytes pins the header byte by byte, as the package doc
// describes it: a peer of another build decodes exactly this.
func TestHeaderBytes(t *testing.T) {
	h := Header{Version: 1, Kind: KindItem, Txn: 0x0102030405060708, Len: 0x00010000, FDs: 253, Flags: FlagMore}
	b := h.encode(nil)
	assert.Equal(t, "5447484f"+"0001"+"0002"+"0102030405060708"+"00010000"+"00fd"+"0001", hex.EncodeToString(b))
	require.Len(t, b, HeaderLen)
	got, err := decodeHeader(b)
	require.NoError(t, err)
	assert.Equal(t, h, got, "decode(encode(h)) should be h")
}

// TestParseFrame: every check of a received frame's header, with the
// field it names and the sentinel it unwraps to.
func TestParseFrame(t *testing.T) {
	good := func(h Header) []byte {
		if h.Version == 0 {
			h.Version = Version
		}
		return h.encode(nil)
	}
	for _, c := range []struct {
		name  string
		b     []byte
		nfds  int
		field string
		err   error
	}{
		{"short", []byte("TGHO\x00\x01"), 0, "length", ErrMalformed},
		{"magic", append([]byte("XGHO"), good(Header{Kind: KindAck})[4:]...), 0, "magic", ErrMalformed},
		{"version 2", good(Header{Version: 2, Kind: KindHello}), 0, "version", ErrVersion},
		{"version 0", good(Header{Version: 0xffff, Kind: KindHello}), 0, "version", ErrVersion},
		{"kind 0", good(Header{Kind: 0}), 0, "kind", ErrMalformed},
		{"kind 8", good(Header{Kind: 8}), 0, "kind", ErrMalformed},
		{"reserved flag", good(Header{Kind: KindItem, Flags: 2}), 0, "flags", ErrMalformed},
		{"FlagMore on ack", good(Header{Kind: KindAck, Flags: FlagMore}), 0, "flags", ErrMalformed},
		{"payload over max", good(Header{Kind: KindItem, Len: MaxPayload + 1}), 0, "payload length", ErrMalformed},
		{"254 fds", good(Header{Kind: KindItem, FDs: 254}), 254, "fd count", ErrMalformed},
		{"fds on commit", good(Header{Kind: KindCommit, FDs: 1}), 1, "fd count", ErrMalformed},
		{"length says more", good(Header{Kind: KindAbort, Len: 10}), 0, "payload length", ErrMalformed},
		{"length says less", append(good(Header{Kind: KindAbort, Len: 1}), "ab"...), 0, "payload length", ErrMalformed},
		{"more fds than said", good(Header{Kind: KindItem, FDs: 1}), 2, "fd count", ErrMalformed},
		{"fewer fds than said", good(Header{Kind: KindItem, FDs: 2}), 1, "fd count", ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := parseFrame(c.b, c.nfds)
			var fe *FrameError
			require.ErrorAs(t, err, &fe, "a *FrameError expected")
			assert.Equal(t, c.field, fe.Field, "the field named: %v", err)
			assert.ErrorIs(t, err, c.err)
		})
	}
	h, p, err := parseFrame(append(good(Header{Kind: KindAbort, Txn: 9, Len: 2}), "no"...), 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(9), h.Txn)
	assert.Equal(t, "no", string(p))
}

// FuzzParseFrame feeds arbitrary datagrams to the frame parser. It must
// not panic; what it accepts must encode back to the same header and
// carry the payload its header says; what it rejects must be a
// *FrameError that unwraps to ErrMalformed or ErrVersion.
//
//	go test -run '^$' -fuzz FuzzParseFrame -fuzztime 10s ./internal/handoff
func FuzzParseFrame(f *testing.F) {
	seed := func(h Header, payload string, nfds uint8) {
		h.Len = uint32(len(payload))
		f.Add(append(h.encode(nil), payload...), nfds)
	}
	seed(Header{Version: 1, Kind: KindHello}, "\x00\x01\x00\x01", 0)
	seed(Header{Version: 1, Kind: KindItem, Txn: 1, FDs: 2, Flags: FlagMore}, "\x00\x07data", 2)
	seed(Header{Version: 1, Kind: KindCommitQ, Txn: 1}, "\x00\x00\x00\x01\x00\x00\x00\x02", 0)
	seed(Header{Version: 2, Kind: KindHello}, "\x00\x02\x00\x02", 0)
	seed(Header{Version: 1, Kind: KindAbort, Txn: 3}, "no room", 0)
	f.Add([]byte("TGHO"), uint8(0))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, nfds uint8) {
		h, payload, err := parseFrame(b, int(nfds))
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrVersion)) {
				t.Fatalf("parseFrame(%q, %d): %v, want a *FrameError of ErrMalformed or ErrVersion", b, nfds, err)
			}
			return
		}
		if string(h.encode(nil)) != string(b[:HeaderLen]) || uint64(len(payload)) != uint64(h.Len) || int(h.FDs) != int(nfds) {
			t.Fatalf("parseFrame(%q, %d) = %+v, %d bytes: does not round-trip", b, nfds, h, len(payload))
		}
	})
}
