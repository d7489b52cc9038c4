package tcpgrace

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Ticket key rotation, as crypto/tls does it for keys it makes itself: a
// new key every day, each valid for a week.
const (
	ticketRotation = 24 * time.Hour
	ticketLifetime = 7 * 24 * time.Hour
)

// tickets are the service's TLS session-ticket keys, newest first, and
// the configs that use them, and the service secret (secret.go), which
// travels with them.
type tickets struct {
	mu     sync.Mutex
	keys   []wire.TicketKey
	cfgs   []*tls.Config
	timer  *time.Timer
	closed bool
	secret *[32]byte // nil until Secret or handTickets needs it
}

// ShareTicketKeys makes cfg encrypt its TLS session tickets with keys that
// every generation of the service shares, so that a client that got a
// ticket from one generation resumes its session (no full handshake) with
// the next, TLS 1.2 and 1.3 alike. The keys are the ones the previous
// generation used, with their ages; on a first start, new random ones.
// They rotate as crypto/tls's own do: a new key every 24 hours, each
// accepted for 7 days; a timer does it while this generation lives.
// Upgrade hands them to the next generation (in a pipe, never in the
// environment). Call it before serving with cfg, once per config; it
// replaces what cfg.SetSessionTicketKeys set. After a cold start clients
// cannot resume: the keys are new.
func (u *Upgrader) ShareTicketKeys(cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("tcpgrace: ShareTicketKeys needs a tls.Config")
	}
	t := &u.tickets
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.keys == nil {
		t.keys = u.inh.TicketKeys()
	}
	if err := t.rotateLocked(time.Now()); err != nil {
		return err
	}
	t.cfgs = append(t.cfgs, cfg)
	cfg.SetSessionTicketKeys(t.keyBytes())
	return nil
}

// rotateLocked adds a new key if the newest is a day old (or there is
// none), drops keys past their week, and sets the timer for the next
// rotation.
func (t *tickets) rotateLocked(now time.Time) error {
	if len(t.keys) == 0 || now.Sub(t.keys[0].Created) >= ticketRotation {
		k := wire.TicketKey{Created: now}
		if _, err := rand.Read(k.Key[:]); err != nil {
			return fmt.Errorf("tcpgrace: a session-ticket key: %w", err)
		}
		t.keys = append([]wire.TicketKey{k}, t.keys...)
	}
	for len(t.keys) > 1 && (now.Sub(t.keys[len(t.keys)-1].Created) >= ticketLifetime || len(t.keys) > wire.MaxTicketKeys) {
		t.keys = t.keys[:len(t.keys)-1]
	}
	next := t.keys[0].Created.Add(ticketRotation).Sub(now)
	if t.timer == nil {
		t.timer = time.AfterFunc(next, t.rotate)
	} else {
		t.timer.Reset(next)
	}
	return nil
}

// rotate is the timer's: it rotates and gives every config the new keys.
func (t *tickets) rotate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.rotateLocked(time.Now()) != nil {
		return
	}
	for _, cfg := range t.cfgs {
		cfg.SetSessionTicketKeys(t.keyBytes())
	}
}

func (t *tickets) keyBytes() [][32]byte {
	out := make([][32]byte, len(t.keys))
	for i, k := range t.keys {
		out[i] = k.Key
	}
	return out
}

// stop stops the rotation timer; the keys stay for a next generation
// that may still be started.
func (t *tickets) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
	}
}

// handTickets adds a pipe holding the keys and the service secret to what
// the next generation gets, if this generation has either (the ready pipe
// goes before files, see runChild). Without keys the next generation makes
// new ones: clients then make a full handshake once. The secret goes on
// even if this generation never asked for it, as long as it inherited one.
func (u *Upgrader) handTickets(h *handed, env *wire.Env) {
	u.tickets.mu.Lock()
	keys := append([]wire.TicketKey(nil), u.tickets.keys...)
	secret := u.tickets.secretLocked(u.inh, false)
	u.tickets.mu.Unlock()
	if secret != nil && len(keys) >= wire.MaxTicketKeys {
		keys = keys[:wire.MaxTicketKeys-1] // the oldest gives way to the secret
	}
	if len(keys) == 0 && secret == nil {
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		u.log.Warn("session-ticket keys not handed on: TLS clients will not resume", "err", err)
		return
	}
	_, err = w.Write(wire.EncodeTicketKeys(keys, secret)) // a few KiB at most: the pipe holds them
	w.Close()
	if err != nil {
		r.Close()
		u.log.Warn("session-ticket keys not handed on: TLS clients will not resume", "err", err)
		return
	}
	env.Tickets = h.next()
	h.addFile(r)
}
