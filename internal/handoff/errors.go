package handoff

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors of this package unwrap to one of them (through
// a [*FrameError], a [*PhaseError] or an [*AbortError]), so callers test
// with errors.Is.
var (
	// ErrMalformed reports a frame that does not follow the format: a
	// peer that sends garbage, or a bug. The channel is then unusable.
	ErrMalformed = errors.New("tcpgrace: hand-off: malformed frame")
	// ErrVersion reports a peer of another version: a frame header of
	// another version, or a hello whose range has no version in common
	// with ours. The caller falls back: it keeps what it holds.
	ErrVersion = errors.New("tcpgrace: hand-off: no version in common with the peer")
	// ErrTruncated reports a frame that did not fit the receive buffers
	// (MSG_TRUNC or MSG_CTRUNC); fds that did arrive with it are closed.
	ErrTruncated = errors.New("tcpgrace: hand-off: frame truncated")
	// ErrTooLarge reports items over the limits ([MaxData],
	// [MaxItems], [MaxFDs], [MaxBytes]), refused before anything is sent.
	ErrTooLarge = errors.New("tcpgrace: hand-off: over the limits")
	// ErrPeerClosed reports that the other end closed the channel.
	ErrPeerClosed = errors.New("tcpgrace: hand-off: the peer closed the channel")
	// ErrAborted reports a transaction that one side aborted; the
	// [*AbortError] says which side and why.
	ErrAborted = errors.New("tcpgrace: hand-off: transaction aborted")
	// ErrBroken reports a call on a [Giver] or [Taker] whose channel an
	// earlier error left in an unknown state.
	ErrBroken = errors.New("tcpgrace: hand-off: channel broken by an earlier error")
	// ErrNotSupported reports a platform without Unix sockets.
	ErrNotSupported = errors.New("tcpgrace: hand-off: not supported on this platform")
)

// FrameError says which field of a received frame was wrong and how. It
// unwraps to ErrMalformed, ErrVersion or ErrTruncated.
type FrameError struct {
	Field  string // "magic", "version", "kind", "flags", "payload length", "fd count", "length", "control"
	Reason string // what was received and what was expected
	Err    error  // the sentinel
}

// Error implements error.
func (e *FrameError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Reason)
}

// Unwrap returns the sentinel error.
func (e *FrameError) Unwrap() error { return e.Err }

// Phases of a transaction, as a [*PhaseError] names them.
const (
	PhaseHello   = "hello"   // exchanging version ranges
	PhasePrepare = "prepare" // items going over
	PhaseVote    = "commit?" // the giver waits for prepared or abort; the taker for items and commit?
	PhaseCommit  = "commit"  // the taker waits for commit or abort; the giver sends commit
	PhaseAck     = "ack"     // the giver waits for the taker's ack
)

// PhaseError says which side failed, in which transaction and phase, and
// why. Err is the cause: a [*FrameError], ErrPeerClosed, the context's
// error at a deadline, a system error.
type PhaseError struct {
	Side  string // "giver" or "taker"
	Txn   uint64 // the transaction id; 0 for hello
	Phase string // one of the Phase constants
	Err   error
}

// Error implements error.
func (e *PhaseError) Error() string {
	if e.Txn == 0 {
		return fmt.Sprintf("tcpgrace: hand-off: %s: %s: %v", e.Side, e.Phase, e.Err)
	}
	return fmt.Sprintf("tcpgrace: hand-off: %s: transaction %d: %s: %v", e.Side, e.Txn, e.Phase, e.Err)
}

// Unwrap returns the cause.
func (e *PhaseError) Unwrap() error { return e.Err }

// AbortError is a transaction that a side aborted, with its reason. It
// unwraps to ErrAborted.
type AbortError struct {
	By     string // "giver" or "taker": who aborted
	Txn    uint64
	Reason string
}

// Error implements error.
func (e *AbortError) Error() string {
	return fmt.Sprintf("tcpgrace: hand-off: transaction %d aborted by the %s: %s", e.Txn, e.By, e.Reason)
}

// Unwrap returns ErrAborted.
func (e *AbortError) Unwrap() error { return ErrAborted }
