package tcpgrace

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Secret returns a 32-byte key for label that every generation of the
// service gets alike: HMAC-SHA256 of label under the service secret, 32
// random bytes made by the first generation that needs them and handed to
// each next one with the TLS session-ticket keys (a pipe, never the
// environment), so that it is there from New on, before Ready, not only
// when the previous generation's drain ends (as [Options.State] is).
// Different labels give independent keys; use one per purpose, such as a
// QUIC stateless-reset key and a QUIC token key (package
// github.com/tcpgrace/tcpgrace/tcpgrace/quic does). It never blocks and
// works in every state. A generation that never calls it still hands on
// the secret it inherited. The secret is new after a cold start (and after
// a restart through systemd's fd store, which keeps only sockets and
// Options.State), and after an upgrade from a build without Secret.
func (u *Upgrader) Secret(label string) [32]byte {
	u.tickets.mu.Lock()
	secret := u.tickets.secretLocked(u.inh, true)
	u.tickets.mu.Unlock()
	mac := hmac.New(sha256.New, secret[:])
	mac.Write([]byte(label))
	var out [32]byte
	copy(out[:], mac.Sum(nil))
	return out
}

// secretLocked returns the service secret: the one known already, else
// the inherited one, else, if create is set, a new random one (nil if not).
func (t *tickets) secretLocked(inh *wire.Files, create bool) *[32]byte {
	if t.secret != nil {
		return t.secret
	}
	if s, ok := inh.Secret(); ok {
		t.secret = &s
	} else if create {
		t.secret = new([32]byte)
		rand.Read(t.secret[:]) // never fails (crypto/rand, Go 1.24 on)
	}
	return t.secret
}
