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

// MaxTicketKeys bounds the entries handed over, the service secret's
// included.
const MaxTicketKeys = 64

// ticketKeysVersion is the first byte of the keys' encoding.
const ticketKeysVersion = 1

// secretCreated is the creation time (Unix nanoseconds) of the entry that
// holds the service secret (Upgrader.Secret) rather than a ticket key: the
// Unix epoch, which no key made by time.Now has. A build that knows no
// secret takes that entry for a ticket key past its week and drops it
// before it uses its keys (tcpgrace's rotateLocked), so that builds with
// and without the secret hand off to each other in both directions; a
// build without it does not hand it on, and the next one makes a new one.
const secretCreated = 0

// EncodeTicketKeys is what the tickets pipe carries: a version byte (1),
// an entry count (one byte), then per entry its creation time (Unix
// nanoseconds, big-endian int64) and its 32 bytes: the ticket keys, then,
// if secret is not nil, the service secret as one more entry created at
// the Unix epoch (0). The caller keeps len(keys) within MaxTicketKeys,
// one less with a secret.
func EncodeTicketKeys(keys []TicketKey, secret *[32]byte) []byte {
	n := len(keys)
	if secret != nil {
		n++
	}
	b := make([]byte, 0, 2+n*40)
	b = append(b, ticketKeysVersion, byte(n))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created.UnixNano()))
		b = append(b, k.Key[:]...)
	}
	if secret != nil {
		b = binary.BigEndian.AppendUint64(b, secretCreated)
		b = append(b, secret[:]...)
	}
	return b
}

// DecodeTicketKeys decodes EncodeTicketKeys's bytes: the ticket keys, and
// the service secret (nil if none was handed over). The error says what
// is wrong: an unknown version, a count that does not match the length,
// more than MaxTicketKeys entries, or an entry created at the epoch (the
// secret) that is not the last one.
func DecodeTicketKeys(b []byte) ([]TicketKey, *[32]byte, error) {
	if len(b) < 2 || b[0] != ticketKeysVersion {
		return nil, nil, errors.New("ticket keys of an unknown format")
	}
	n := int(b[1])
	if n > MaxTicketKeys || len(b) != 2+n*40 {
		return nil, nil, fmt.Errorf("%d ticket keys in %d bytes", n, len(b))
	}
	keys := make([]TicketKey, 0, n)
	var secret *[32]byte
	for i := range n {
		rec := b[2+i*40:]
		created := int64(binary.BigEndian.Uint64(rec))
		if created == secretCreated {
			if i != n-1 {
				return nil, nil, fmt.Errorf("entry %d of %d is the service secret, which goes last", i+1, n)
			}
			secret = new([32]byte)
			copy(secret[:], rec[8:40])
			continue
		}
		k := TicketKey{Created: time.Unix(0, created)}
		copy(k.Key[:], rec[8:40])
		keys = append(keys, k)
	}
	return keys, secret, nil
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
	keys, secret, err := DecodeTicketKeys(b)
	if err != nil {
		return bad(err)
	}
	// The secret rides last in f.tickets, as on the wire (Secret finds it).
	if secret != nil {
		keys = append(keys, TicketKey{Created: time.Unix(0, secretCreated), Key: *secret})
	}
	f.tickets = keys
	return nil
}

// TicketKeys returns the TLS session-ticket keys the previous generation
// handed over, nil if none.
func (f *Files) TicketKeys() []TicketKey {
	keys := f.tickets
	if _, ok := f.Secret(); ok {
		keys = keys[:len(keys)-1]
	}
	if len(keys) == 0 {
		return nil
	}
	return keys
}

// Secret returns the service secret the previous generation handed over
// with the ticket keys, and whether there was one.
func (f *Files) Secret() ([32]byte, bool) {
	if n := len(f.tickets); n > 0 && f.tickets[n-1].Created.UnixNano() == secretCreated {
		return f.tickets[n-1].Key, true
	}
	return [32]byte{}, false
}
