package quic

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"

	"github.com/quic-go/quic-go"
)

// The layout of a connection ID: tag (the generation mod 256), random
// bytes, then a MAC over both.
const (
	idLen    = 12
	idMACLen = 4
	idTagged = idLen - idMACLen // the bytes the MAC covers
)

// tagOf is a generation's tag: what the first byte of its IDs says.
func tagOf(generation int) byte { return byte(generation) }

// idMAC checks and makes the MAC of connection IDs. It is not safe for
// concurrent use: each goroutine that checks has its own (the router),
// and the generator locks its.
type idMAC struct{ h hash.Hash }

func newIDMAC(key [32]byte) *idMAC { return &idMAC{h: hmac.New(sha256.New, key[:])} }

func (m *idMAC) sum(id []byte) []byte {
	m.h.Reset()
	m.h.Write(id[:idTagged])
	return m.h.Sum(nil)[:idMACLen]
}

// ours reports whether id is a connection ID some generation of this
// service made (its MAC checks out), as opposed to one a client chose.
func (m *idMAC) ours(id []byte) bool {
	return len(id) == idLen && hmac.Equal(m.sum(id), id[idTagged:])
}

// idGenerator is the quic-go ConnectionIDGenerator of one generation.
type idGenerator struct {
	tag byte
	mu  sync.Mutex
	mac *idMAC
}

var _ quic.ConnectionIDGenerator = (*idGenerator)(nil)

// GenerateConnectionID makes an ID: the tag, 7 random bytes, the MAC.
func (g *idGenerator) GenerateConnectionID() (quic.ConnectionID, error) {
	var b [idLen]byte
	b[0] = g.tag
	rand.Read(b[1:idTagged])
	g.mu.Lock()
	copy(b[idTagged:], g.mac.sum(b[:]))
	g.mu.Unlock()
	return quic.ConnectionIDFromBytes(b[:]), nil
}

// ConnectionIDLen is 12.
func (g *idGenerator) ConnectionIDLen() int { return idLen }

// Packet kinds, by where a packet should go.
const (
	toMine   = iota // this generation's connection, or nothing to route by
	toOwner         // another generation's connection: the tag says which
	toNewest        // a new connection: the newest generation's
)

// classify says where packet b goes, and for toOwner the owner's tag.
// Short header: the ID (idLen bytes after the first) names its owner.
// Long header: an ID of ours names its owner; any other, a client's
// choice, is a new connection.
func classify(b []byte, mine byte, mac *idMAC) (kind int, tag byte) {
	if len(b) == 0 {
		return toMine, mine
	}
	var id []byte
	if b[0]&0x80 == 0 { // short header
		if len(b) < 1+idLen {
			return toMine, mine
		}
		id = b[1 : 1+idLen]
	} else {
		if len(b) < 6 {
			return toMine, mine
		}
		n := int(b[5])
		if len(b) < 6+n || n != idLen || !mac.ours(b[6:6+n]) {
			return toNewest, mine
		}
		id = b[6 : 6+n]
	}
	if id[0] == mine {
		return toMine, mine
	}
	return toOwner, id[0]
}
