// Package quic keeps QUIC connections (and so HTTP/3) of quic-go alive
// through tcpgrace upgrades, as Meta's mvfst does.
//
// UDP has no accept: every generation holds the one UDP socket, and after
// an upgrade the new generation reads every datagram (tcpgrace stops the
// old one's reads when it hands off). [Listen] makes an [Endpoint] whose
// quic-go Transport routes by connection ID:
//
//   - Connection IDs carry their generation: 12 bytes, the first the
//     generation mod 256, then 7 random bytes, then 4 bytes of HMAC over
//     the first 8 under a key every generation shares, so that an ID a
//     client chose (its first Initial's) is told apart from one of ours.
//   - A short-header packet goes to the generation its ID names. A
//     long-header one (Initial, 0-RTT, Handshake) whose ID is ours goes to
//     the generation it names; any other, a new connection, goes to the
//     newest generation: the next one if it is up, else this one.
//   - Packets of another generation go to it over its forward channel with
//     the client's address; it answers on the shared UDP socket itself.
//   - A packet for a generation that is gone stays here: quic-go answers
//     it with a stateless reset, whose token is right because the
//     stateless-reset key is the same in every generation
//     ([tcpgrace.Upgrader.Secret]), so the client gives up the connection
//     at once instead of timing out, and reconnects.
//
// The forward channel of a generation is a Unix datagram socket of its
// own in Linux's abstract namespace, named after the service (a name
// derived from the service secret, which only the service's generations
// know) and the generation's tag; each datagram is a small header (the
// client's address) and the QUIC packet. The receiver takes only
// datagrams whose sender's credentials (SO_PASSCRED, filled in by the
// kernel) are root's or its own uid's, so that no other user can inject
// packets with a forged client address. It is gone the moment its process
// is: the sender's ECONNREFUSED says the owner is gone.
//
// The token key (address-validation and resumption tokens) is the same in
// every generation too, so a token from one is good at the next.
//
// What an old generation does with its connections is the application's:
// the usual is HTTP/3 GOAWAY (http3.Server.Shutdown), after which clients
// finish their requests and open new connections, which reach the new
// generation. examples/http3 in the repository is a whole server.
//
// Linux only: elsewhere [Listen] fails with an error that errors.Is finds
// to be [tcpgrace.ErrNotSupported].
//
// The package is named quic, like quic-go's: import one under another
// name, such as tgquic.
package quic
