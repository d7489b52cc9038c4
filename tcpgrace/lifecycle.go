package tcpgrace

import "fmt"

// state is where one generation is in its life. It only moves forward,
// except that a failed upgrade falls back to serving:
//
//	starting ──Ready──▶ readying ──parent told──▶ serving ──Upgrade──▶ upgrading ──child ready──▶ handedOff
//	                                                 ▲                     │
//	                                                 └──── child failed ───┘
//
// Shutdown and Close move every state but upgrading to closed; they
// cancel an upgrade first and wait until it has fallen back or handed off.
type state int

const (
	starting  state = iota // New returned; Listen works, Upgrade does not
	readying               // Ready runs: the PID file, the word to the parent
	serving                // Ready told the parent, if any; Upgrade may run
	upgrading              // a next generation is starting
	handedOff              // the next generation serves; this one drains
	closed                 // Shutdown or Close was called
)

var stateNames = [...]string{"starting", "readying", "serving", "upgrading", "handed off", "closed"}

func (s state) String() string { return stateNames[s] }

// next lists the states each state may move to.
var next = map[state][]state{
	starting:  {readying, closed},
	readying:  {serving, closed},
	serving:   {upgrading, closed},
	upgrading: {serving, handedOff},
	handedOff: {closed},
}

// moveLocked is the one place the state changes. It moves to s if the
// current state allows it, and reports whether it did. u.mu must be held.
func (u *Upgrader) moveLocked(s state) bool {
	for _, ok := range next[u.state] {
		if ok == s {
			u.state = s
			return true
		}
	}
	return false
}

// op is something a caller asks of an Upgrader.
type op int

const (
	opListen op = iota
	opReady
	opUpgrade
)

// refuse explains why op cannot run in state s, or returns nil.
func (s state) refuse(o op) error {
	switch {
	case s == closed:
		return ErrClosed
	case s == handedOff:
		return ErrUpgraded
	case o == opReady && s != starting:
		return ErrAlreadyReady
	case o == opUpgrade && (s == starting || s == readying):
		return ErrNotReady
	case o != opReady && s == upgrading:
		return ErrUpgradeInProgress
	}
	return nil
}

// checkLocked is refuse for the current state. u.mu must be held.
func (u *Upgrader) checkLocked(o op) error { return u.state.refuse(o) }

// mustMoveLocked is moveLocked for a move the caller has just checked.
func (u *Upgrader) mustMoveLocked(s state) {
	if !u.moveLocked(s) {
		panic(fmt.Sprintf("tcpgrace: no move from %v to %v", u.state, s))
	}
}
