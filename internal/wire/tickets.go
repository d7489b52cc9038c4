package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// TicketKey is one TLS session-ticket key and when it was made: the
// generations of a service share their keys, so that a client resumes its
// TLS session with the next generation, and pass on their ages, so that
// rotation goes on.
type TicketKey struct {
	Created time.Time
	Key     [32]byte
}

// MaxTicketKeys bounds the keys handed over.
const MaxTicketKeys = 64

// ticketKeysVersion is the first byte of the keys' encoding.
const ticketKeysVersion = 1

// EncodeTicketKeys is what the tickets pipe carries: a version byte (1),
// a key count (one byte), then per key its creation time (Unix
// nanoseconds, big-endian int64) and its 32 bytes.
func EncodeTicketKeys(keys []TicketKey) []byte {
	b := []byte{ticketKeysVersion, byte(len(keys))}
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created.UnixNano()))
		b = append(b, k.Key[:]...)
	}
	return b
}

// DecodeTicketKeys decodes EncodeTicketKeys's bytes; the error says what
// is wrong.
func DecodeTicketKeys(b []byte) ([]TicketKey, error) {
	if len(b) < 2 || b[0] != ticketKeysVersion {
		return nil, errors.New("ticket keys of an unknown format")
	}
	n := int(b[1])
	if n > MaxTicketKeys || len(b) != 2+n*40 {
		return nil, fmt.Errorf("%d ticket keys in %d bytes", n, len(b))
	}
	keys := make([]TicketKey, n)
	for i := range keys {
		rec := b[2+i*40:]
		keys[i].Created = time.Unix(0, int64(binary.BigEndian.Uint64(rec)))
		copy(keys[i].Key[:], rec[8:40])
	}
	return keys, nil
}

// openTickets reads the ticket keys from the pipe env names, if any, and
// closes it.
func (f *Files) openTickets(env *Env) error {
	if !env.HasTickets() {
		return nil
	}
	bad := func(err error) error {
		derr := &DecodeError{Var: env.Source, Entry: -1, Err: ErrBadFD,
			Reason: fmt.Sprintf("tickets fd %d: %v", env.Tickets, err)}
		f.Fail(derr)
		return derr
	}
	if _, err := checkPipe(env.Tickets); err != nil {
		return bad(err)
	}
	p := os.NewFile(uintptr(env.Tickets), "tcpgrace-tickets")
	defer p.Close()
	b, err := io.ReadAll(io.LimitReader(p, 2+MaxTicketKeys*40+1))
	if err != nil {
		return bad(err)
	}
	if f.tickets, err = DecodeTicketKeys(b); err != nil {
		return bad(err)
	}
	return nil
}

// TicketKeys returns the TLS session-ticket keys the previous generation
// handed over, nil if none.
func (f *Files) TicketKeys() []TicketKey { return f.tickets }
