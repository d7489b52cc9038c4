package tcpgrace

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// CounterStatus is a counter added with [Upgrader.AddCounter], as
// [Upgrader.Status] read it.
type CounterStatus struct {
	Name  string // as added, such as "quic_packets_forwarded_total"
	Help  string // what it counts, in a sentence
	Value uint64
}

// counterName reports whether name is what AddCounter takes: a
// Prometheus metric name without the tcpgrace_ prefix, a counter's,
// [a-z][a-z0-9_]*_total, at most 64 bytes. (Checked by hand: regexp would
// add its package's start-up to every program that links the library.)
func counterName(name string) bool {
	if len(name) > 64 || !strings.HasSuffix(name, "_total") || len(name) == len("_total") || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for _, c := range []byte(name) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// counters are the counters added to one generation's status.
type counters struct {
	mu   sync.Mutex
	list []addedCounter // sorted by name
}

type addedCounter struct {
	name, help string
	value      func() uint64
}

// AddCounter adds a counter of this generation to its status: Status
// lists it (in [Status] Counters, sorted by name), the control socket's
// status carries it ("counters", which tcpgrace status -human prints), and
// package github.com/tcpgrace/tcpgrace/tcpgrace/metrics exports it as
// tcpgrace_NAME. It is how a package built on the Upgrader (such as
// tcpgrace/quic, with the packets it forwards) makes its own counts seen
// where the library's are.
//
// name is a Prometheus counter's name without the tcpgrace_ prefix:
// lower case letters, digits and '_', starting with a letter, ending in
// _total, at most 64 bytes. value is called, without any lock of the
// Upgrader's held, each time a status is read; it must be cheap, safe for
// concurrent use, and never go down. A counter counts this generation's
// events: it starts again with the next generation. AddCounter fails,
// and adds nothing, for a bad name, a name added already, or a nil
// value.
func (u *Upgrader) AddCounter(name, help string, value func() uint64) error {
	switch {
	case !counterName(name):
		return fmt.Errorf("tcpgrace: AddCounter %q: a counter's name is lower case letters, digits and '_', starts with a letter, ends in _total, at most 64 bytes", name)
	case value == nil:
		return fmt.Errorf("tcpgrace: AddCounter %q: no value function", name)
	case strings.TrimSpace(help) == "":
		return fmt.Errorf("tcpgrace: AddCounter %q: no help text: say what it counts", name)
	}
	c := &u.counters
	c.mu.Lock()
	defer c.mu.Unlock()
	i, found := slices.BinarySearchFunc(c.list, name, func(a addedCounter, n string) int { return strings.Compare(a.name, n) })
	if found {
		return fmt.Errorf("tcpgrace: AddCounter %q: %w", name, errCounterAdded)
	}
	c.list = slices.Insert(c.list, i, addedCounter{name: name, help: help, value: value})
	return nil
}

var errCounterAdded = errors.New("added already")

// read returns every counter's status, sorted by name.
func (c *counters) read() []CounterStatus {
	c.mu.Lock()
	list := slices.Clone(c.list)
	c.mu.Unlock()
	out := make([]CounterStatus, len(list))
	for i, a := range list {
		out[i] = CounterStatus{Name: a.name, Help: a.help, Value: a.value()}
	}
	return out
}
