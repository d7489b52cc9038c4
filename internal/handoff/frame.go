package handoff

import (
	"encoding/binary"
	"fmt"
)

// The wire format's constants (the package documentation describes the
// format byte by byte).
const (
	// Magic opens every frame.
	Magic = "TGHO"
	// Version is the one version of the format this build speaks.
	Version uint16 = 1
	// HeaderLen is the length of a frame header in bytes.
	HeaderLen = 24
	// MaxPayload bounds a frame's payload in bytes.
	MaxPayload = 64 << 10
	// MaxFrame is the largest frame: a header and the largest payload.
	MaxFrame = HeaderLen + MaxPayload
	// MaxFDsPerFrame bounds the fds that ride with one frame (SCM_MAX_FD
	// on Linux).
	MaxFDsPerFrame = 253
	// MaxData bounds an item's data: a frame's payload less the item kind.
	MaxData = MaxPayload - 2
	// MaxItems bounds the items of one transaction.
	MaxItems = 1 << 16
	// MaxFDs bounds the fds of one transaction, all items together.
	MaxFDs = 1 << 16
	// MaxBytes bounds the data of one transaction, all items together.
	MaxBytes = 64 << 20
	// MaxReason bounds an abort's reason in bytes; a longer one is cut.
	MaxReason = 1024
)

// FlagMore, in a frame's flags, says that the item goes on in the next
// frame (more fds). Other flag bits are reserved and must be zero.
const FlagMore uint16 = 1

// Frame kinds.
const (
	KindHello    uint16 = 1 // payload: min, max version (uint16 each); txid 0
	KindItem     uint16 = 2 // "prepare": payload item kind (uint16) + data; or, after FlagMore, none
	KindCommitQ  uint16 = 3 // "commit?": payload item count, fd count (uint32 each)
	KindPrepared uint16 = 4 // the taker accepted every item; no payload
	KindAbort    uint16 = 5 // payload: the reason, text
	KindCommit   uint16 = 6 // no payload
	KindAck      uint16 = 7 // the taker holds the items; no payload
	kindLast            = KindAck
)

// kindNames names the frame kinds in errors.
var kindNames = map[uint16]string{
	KindHello: "hello", KindItem: "prepare", KindCommitQ: "commit?", KindPrepared: "prepared",
	KindAbort: "abort", KindCommit: "commit", KindAck: "ack",
}

// kindName names kind k.
func kindName(k uint16) string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("unknown kind %d", k)
}

// Header is a frame's fixed header.
type Header struct {
	Version uint16
	Kind    uint16
	Txn     uint64
	Len     uint32 // payload length in bytes
	FDs     uint16 // fds riding with the frame
	Flags   uint16 // FlagMore; other bits zero
}

// encode appends h's wire form to b.
func (h Header) encode(b []byte) []byte {
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = binary.BigEndian.AppendUint16(b, h.Kind)
	b = binary.BigEndian.AppendUint64(b, h.Txn)
	b = binary.BigEndian.AppendUint32(b, h.Len)
	b = binary.BigEndian.AppendUint16(b, h.FDs)
	return binary.BigEndian.AppendUint16(b, h.Flags)
}

// malformed is a *FrameError on field, unwrapping to ErrMalformed.
func malformed(field, format string, args ...any) *FrameError {
	return &FrameError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrMalformed}
}

// decodeHeader decodes and checks the header at the start of b: magic,
// version, kind, flags and the bounds of the counts. It does not compare
// the counts with what arrived ([parseFrame] does).
func decodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, malformed("length", "%d bytes, shorter than a %d-byte header", len(b), HeaderLen)
	}
	if string(b[:4]) != Magic {
		return Header{}, malformed("magic", "%q, want %q", b[:4], Magic)
	}
	h := Header{
		Version: binary.BigEndian.Uint16(b[4:]),
		Kind:    binary.BigEndian.Uint16(b[6:]),
		Txn:     binary.BigEndian.Uint64(b[8:]),
		Len:     binary.BigEndian.Uint32(b[16:]),
		FDs:     binary.BigEndian.Uint16(b[20:]),
		Flags:   binary.BigEndian.Uint16(b[22:]),
	}
	switch {
	case h.Version != Version:
		return Header{}, &FrameError{Field: "version", Err: ErrVersion,
			Reason: fmt.Sprintf("%d, this build speaks %d", h.Version, Version)}
	case h.Kind == 0 || h.Kind > kindLast:
		return Header{}, malformed("kind", "%d, want 1 to %d", h.Kind, kindLast)
	case h.Flags&^FlagMore != 0:
		return Header{}, malformed("flags", "%#04x has reserved bits set", h.Flags)
	case h.Flags != 0 && h.Kind != KindItem:
		return Header{}, malformed("flags", "FlagMore on a %s frame", kindName(h.Kind))
	case h.Len > MaxPayload:
		return Header{}, malformed("payload length", "%d, more than %d", h.Len, MaxPayload)
	case h.FDs > MaxFDsPerFrame:
		return Header{}, malformed("fd count", "%d, more than %d", h.FDs, MaxFDsPerFrame)
	case h.FDs != 0 && h.Kind != KindItem:
		return Header{}, malformed("fd count", "%d fds on a %s frame", h.FDs, kindName(h.Kind))
	}
	return h, nil
}

// parseFrame decodes a received frame b that came with nfds fds: its
// header, checked against the payload length and the fd count that
// arrived, and its payload (a slice of b).
func parseFrame(b []byte, nfds int) (Header, []byte, error) {
	h, err := decodeHeader(b)
	if err != nil {
		return Header{}, nil, err
	}
	if got := len(b) - HeaderLen; uint64(got) != uint64(h.Len) {
		return Header{}, nil, malformed("payload length", "the header says %d bytes, %d arrived", h.Len, got)
	}
	if int(h.FDs) != nfds {
		return Header{}, nil, malformed("fd count", "the header says %d fds, %d arrived", h.FDs, nfds)
	}
	return h, b[HeaderLen:], nil
}
