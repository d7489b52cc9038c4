package quic

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The labels of the keys this package asks tcpgrace's Upgrader.Secret
// for: the same in every generation of a service.
const (
	labelService = "tcpgrace/quic service"       // names the forward channels
	labelID      = "tcpgrace/quic connection id" // the MAC of connection IDs
	labelReset   = "tcpgrace/quic stateless reset"
	labelToken   = "tcpgrace/quic token"
)

// Endpoint is one generation's QUIC endpoint on a UDP socket that the
// generations of a service share: the quic-go Transport to listen on,
// and the routing of packets between generations under it (see the
// package doc).
type Endpoint struct {
	conn      *conn
	transport *quic.Transport
	conns     atomic.Int64
}

// Stats counts what an Endpoint did since Listen.
type Stats struct {
	// Forwarded is the packets this generation read from the UDP socket
	// and forwarded to the generation that owns them (or, for a new
	// connection, to the next generation while it starts), and
	// ForwardedBytes their QUIC bytes.
	Forwarded, ForwardedBytes uint64
	// Received is the packets other generations forwarded here.
	Received uint64
	// Orphaned is the packets for a generation that is gone, which this
	// one handled instead; ResetsSent the stateless resets quic-go
	// answered them with (it does for short-header packets over 42 bytes,
	// as many as it keeps up with).
	Orphaned, ResetsSent uint64
	// Dropped is the packets lost here: a forward channel or this
	// generation's queue full, or a frame of no known format.
	Dropped uint64
	// Refused is the frames on this generation's forward channel from a
	// sender that is neither root nor of this process's uid: dropped.
	Refused uint64
	// Conns is the QUIC connections of this generation open now.
	Conns int64
}

// keys are what every generation of a service derives alike.
type keys struct {
	service           string
	id, reset, tokens [32]byte
}

func keysFrom(secret func(label string) [32]byte) keys {
	svc := secret(labelService)
	return keys{service: hex.EncodeToString(svc[:8]), id: secret(labelID),
		reset: secret(labelReset), tokens: secret(labelToken)}
}

// Listen registers the UDP socket name with u (u.ListenPacket(name,
// network, address): the inherited one after an upgrade), opens this
// generation's forward channel and returns the Endpoint over both. Call it
// before u.Ready, then listen on [Endpoint.Transport]. It fails if the
// socket is not UDP, or the channel cannot be opened (not on Linux:
// [tcpgrace.ErrNotSupported]). The first Endpoint of u adds the counters
// quic_packets_forwarded_total, quic_forwarded_bytes_total,
// quic_packets_received_total, quic_stateless_resets_total and
// quic_packets_dropped_total to u's status ([tcpgrace.Upgrader.AddCounter]),
// summed over u's endpoints: tcpgrace status shows them, and package
// tcpgrace/metrics exports them.
func Listen(u *tcpgrace.Upgrader, name, network, address string) (*Endpoint, error) {
	pc, err := u.ListenPacket(name, network, address)
	if err != nil {
		return nil, err
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("tcpgrace/quic: %q is a %T, not a UDP socket", name, pc)
	}
	e, err := newEndpoint(udp, u.Generation(), keysFrom(u.Secret))
	if err != nil {
		return nil, err
	}
	if err := count(u, e); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// newEndpoint is Listen on a UDP socket of a generation with keys k.
func newEndpoint(udp *net.UDPConn, generation int, k keys) (*Endpoint, error) {
	tag := tagOf(generation)
	ch, err := openChannel(k.service, tag)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{conn: newConn(udp, ch, tag, k.id, k.reset)}
	reset := quic.StatelessResetKey(k.reset)
	tokens := quic.TokenGeneratorKey(k.tokens)
	e.transport = &quic.Transport{
		Conn:                  e.conn,
		ConnectionIDGenerator: &idGenerator{tag: tag, mac: newIDMAC(k.id)},
		StatelessResetKey:     &reset,
		TokenGeneratorKey:     &tokens,
		ConnContext: func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
			e.conns.Add(1)
			context.AfterFunc(ctx, func() { e.conns.Add(-1) })
			return ctx, nil
		},
	}
	return e, nil
}

// Transport is the quic-go Transport to listen on (Listen, ListenEarly,
// or an http3.Server's ServeListener over one): its Conn, connection-ID
// generator, stateless-reset key, token key and ConnContext are set and
// must stay; set its other fields before the first use.
func (e *Endpoint) Transport() *quic.Transport { return e.transport }

// Stats returns the counters of this generation's Endpoint.
func (e *Endpoint) Stats() Stats {
	c := e.conn
	return Stats{Forwarded: c.forwarded.Load(), ForwardedBytes: c.forwardedBytes.Load(),
		Received: c.received.Load(), Orphaned: c.orphaned.Load(), ResetsSent: c.resets.Load(),
		Dropped: c.dropped.Load(), Refused: c.ch.refused(), Conns: e.conns.Load()}
}

// Close closes the Transport (which ends every connection left without a
// word to its peer: shut the HTTP/3 or QUIC server down gracefully first),
// then this generation's forward channel: from then on packets for its
// connections are answered with a stateless reset by the generation that
// reads them. The UDP socket stays: tcpgrace's Upgrader owns it. Safe to
// call twice.
func (e *Endpoint) Close() error {
	return errors.Join(e.transport.Close(), e.conn.Close())
}
