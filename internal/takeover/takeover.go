// Package takeover hands a serving generation's sockets to a process it
// did not start (a blue/green deploy, a second unit, a binary started by
// hand): the library and tcpgrace run both give and take with it.
//
// The exchange, on one connection to the giver's control socket:
//
//	taker                                   giver
//	{"v":1,"cmd":"takeover"}\n          ->
//	                                    <-  {"v":1,"ok":true,"takeover":{...}}\n
//	                                        with one fd (SCM_RIGHTS): the taker's end of a
//	                                        new hand-off channel (internal/handoff)
//	hello, then one transaction on the channel: one item of KindSockets,
//	its data a value of TCPGRACE_FDS, its files the fds that value names
//	(the writer's fd 3+i is the item's file i), the readiness pipe first
//	                                    <-  'A' once it read ReadyByte on the pipe
//	                                        or a reply line with the failure
//	                                    <-  a reply line with the outcome
//
// The channel closes after the transaction. From then on the taker is the
// giver's next generation as an exec'd child would be: it says ready,
// fails or leaves on the readiness pipe, and takes idle connections and
// the state on the hand-off channel the value names. The giver watches
// the control connection for the taker's death (it reads end of file; the
// taker keeps the connection open until it leaves), and after ReadyByte
// confirms with 'A': the taker serves only then, so that a giver that has
// given up (its ready timeout passed, it was stopped) never leaves two
// generations serving. A reply line instead of 'A' is the giver's reason
// for giving up; an end of file without one means the giver died, and
// the taker, which holds every socket, serves alone.
package takeover

import (
	"errors"
	"time"
)

// KindSockets is the kind of the transaction's one item.
const KindSockets uint16 = 0x5400

// Confirmed is the byte the giver writes on the control connection once
// it read the taker's ReadyByte.
const Confirmed = 'A'

// ReplyTimeout bounds the taker's wait for the giver's first reply and
// for the transaction.
const ReplyTimeout = 10 * time.Second

// ErrGiverGone reports a giver whose control connection ended without a
// word after the taker said ready: it died, and the taker serves alone.
var ErrGiverGone = errors.New("tcpgrace: takeover: the giving generation is gone")

// ErrGaveUp reports a giver that gave up the takeover before it read the
// taker's ready (its ready timeout passed, it was stopped); the taker
// must not serve.
var ErrGaveUp = errors.New("tcpgrace: takeover: the giving generation gave up")

// ErrNobody reports that no process listens on the control socket's path
// (no file, or connection refused): there is nothing to take over.
var ErrNobody = errors.New("tcpgrace: takeover: nobody serves there")
