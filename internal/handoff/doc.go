// Package handoff is the channel between two generations of a server:
// its framing and its transactions, written once for everything that
// passes from the old generation to the new one after readiness (idle
// connections, the application's state blob, a takeover's sockets). The
// library's side is tcpgrace/handoff.go (giving) and tcpgrace/adopt.go
// (taking).
//
// # Transport
//
// A Unix SOCK_SEQPACKET socket pair ([Pair]): one frame is one datagram,
// delivered whole and in order, and a closed end reads as end of file. A
// [Conn] is one end, made by Pair or by [NewConn] from an inherited fd,
// which must be a Unix SOCK_SEQPACKET socket. Every fd the package holds
// or receives is close-on-exec.
//
// # Frames
//
// A frame is a 24-byte header, big-endian, then the payload:
//
//	offset size field
//	0      4    magic "TGHO" (54 47 48 4f)
//	4      2    version: 1
//	6      2    kind: 1 hello, 2 prepare (an item), 3 commit?, 4 prepared, 5 abort, 6 commit, 7 ack
//	8      8    transaction id: 0 for hello, then 1, 2, ... as the giver counts them
//	16     4    payload length: at most [MaxPayload] (65536)
//	20     2    fd count: the fds riding with the frame (SCM_RIGHTS), at most [MaxFDsPerFrame] (253), only on prepare
//	22     2    flags: bit 0 [FlagMore] (only on prepare), the other bits reserved, zero
//	24     n    payload
//
// Payloads: hello carries the sender's lowest and highest version
// (uint16 each; a later version may append fields, which are ignored).
// The first frame of an item (prepare) carries the item's kind (uint16)
// and data, at most [MaxData] bytes, and up to 253 of its fds; an item
// with more fds goes on in frames with no payload and the next 253 fds,
// FlagMore set on every frame of the item but the last. commit? carries
// the transaction's item count and fd count (uint32 each), abort its
// reason (text, at most [MaxReason] bytes); the others carry nothing.
//
// A receiver reads into a buffer of [MaxFrame] bytes with room for 253
// fds. It rejects a frame cut short (MSG_TRUNC) or whose fds were cut
// (MSG_CTRUNC), a wrong magic, another version, an unknown kind, reserved
// flags, and a payload length or fd count other than what arrived: a
// [*FrameError] naming the field and what was received, unwrapping to
// [ErrTruncated], [ErrVersion] or [ErrMalformed]. The fds of a rejected
// frame are closed.
//
// # Transactions
//
// Both sides first send hello with the range of versions they speak and
// agree on the lower of the two maxima, if both ranges hold it; if not,
// both get [ErrVersion] and the giver keeps everything. The hello header
// is version 1 whatever the sender speaks, so any build reads it.
//
// Then the [Giver] hands items over, one transaction at a time:
//
//	giver                                   taker
//	prepare (item 1, fds) ... prepare (item n)  ->
//	commit? (n items, m fds)                ->
//	                                        <-  prepared | abort (reason)
//	commit | abort (reason)                 ->
//	                                        <-  ack (after commit)
//
// The giver closes its fds only when the ack arrived; the taker's fds are
// the caller's only once it sent its ack. Limits per transaction:
// [MaxItems] items, [MaxFDs] fds and [MaxBytes] bytes of data; the giver
// checks them (and [MaxData] per item) before sending anything
// ([ErrTooLarge]), and a taker treats a giver beyond them as malformed.
//
// # Failures
//
//   - The taker refuses (its accept function says why): it answers abort,
//     closes what it received, and the giver gets an [*AbortError] with
//     the reason and keeps every fd. The channel goes on.
//   - The giver aborts after prepared (its context ended): the taker
//     closes what it received and returns an *AbortError.
//   - Either side dies, sends a bad frame, or passes its context's
//     deadline in the middle of a transaction: the other gets a
//     [*PhaseError] naming the side, the transaction and the phase
//     (hello, prepare, commit?, commit, ack), the giver keeps every fd,
//     the taker closes what it received, and the side that failed closes
//     the channel, so that the other learns at once ([ErrPeerClosed]).
//     A Giver or Taker is then [ErrBroken].
//   - The one window left open: the taker sent its ack and the giver,
//     its deadline passed, stopped waiting before it arrived. The giver
//     keeps its fds (PhaseError in the ack phase) while the taker holds
//     them too; a caller that moves connections should give the ack wait
//     room enough.
//   - A taker whose context ends before a transaction began gets the
//     context's error and the channel goes on.
//
// Pair and NewConn need Unix sockets of type SOCK_SEQPACKET (Linux,
// FreeBSD); where the system has none, Pair fails with its error, and
// off Unix with [ErrNotSupported].
package handoff
