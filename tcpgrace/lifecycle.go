package tcpgrace

import "fmt"

// state is where one generation is in its life: the one place it is
// kept, read by every caller and by the control socket's status. It only
// moves forward, except that a failed upgrade falls back to serving:
//
//	starting ──Ready──▶ readying ──parent told──▶ serving ──Upgrade──▶ upgrading ──child ready──▶ grace
//	                                                │  ▲                  │                          │
//	                                                │  └── child failed ──┴──────────────────────────┤
//	                                        loop ends                               grace over or none
//	                                                ▼                                                ▼
//	                                             leaving                                         handedOff
//
// A Server loop that ends (a stop, its context) moves serving to
// leaving: no more upgrades. Shutdown and Close move every state to
// closed; they cancel an upgrade first and wait until it has fallen back
// or handed off.
type state int

const (
	starting  state = iota // New returned; Listen works, Upgrade does not
	readying               // Ready runs: the PID file, the word to the parent
	serving                // Ready told the parent, if any; Upgrade may run
	upgrading              // a next generation is starting
	grace                  // the next generation said ready; its parent watches it (Options.ReadyGrace)
	leaving                // a Server loop stopped: this generation is on its way out
	handedOff              // the next generation serves; this one drains
	closed                 // Shutdown or Close was called
)

var stateNames = [...]string{"starting", "readying", "serving", "upgrading", "grace", "leaving", "handed off", "closed"}

func (s state) String() string { return stateNames[s] }

// next lists the states each state may move to.
var next = map[state][]state{
	starting:  {readying, closed},
	readying:  {serving, closed},
	serving:   {upgrading, leaving, closed},
	upgrading: {grace, serving, handedOff},
	grace:     {serving, handedOff},
	leaving:   {closed},
	handedOff: {closed},
}

// upgradeRuns reports whether an Upgrade runs in state s.
func (s state) upgradeRuns() bool { return s == upgrading || s == grace }

// statusName is the state as the control socket's status says it.
func (s state) statusName() string {
	switch s {
	case starting, readying:
		return "starting"
	case serving:
		return "serving"
	case upgrading, grace:
		return "upgrading"
	case handedOff:
		return "draining"
	}
	return "stopping"
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
	case o == opUpgrade && s == leaving:
		return fmt.Errorf("%w: this generation is leaving; no upgrade", ErrClosed)
	case o != opReady && s.upgradeRuns():
		return ErrUpgradeInProgress
	}
	return nil
}

// refused is refuse for the current state.
func (u *Upgrader) refused(o op) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.checkLocked(o)
}

// currentState is the state now.
func (u *Upgrader) currentState() state {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state
}

// checkLocked is refuse for the current state. u.mu must be held.
func (u *Upgrader) checkLocked(o op) error { return u.state.refuse(o) }

// mustMoveLocked is moveLocked for a move the caller has just checked.
func (u *Upgrader) mustMoveLocked(s state) {
	if !u.moveLocked(s) {
		panic(fmt.Sprintf("tcpgrace: no move from %v to %v", u.state, s))
	}
}
