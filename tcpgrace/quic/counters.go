package quic

import (
	"sync"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The counters Listen adds to the Upgrader's status (tcpgrace status, and
// the metrics of package tcpgrace/metrics as tcpgrace_NAME), summed over
// the generation's endpoints.
var counterDefs = []struct {
	name, help string
	of         func(Stats) uint64
}{
	{"quic_packets_forwarded_total", "QUIC packets this generation read and forwarded to the generation that owns their connection.",
		func(s Stats) uint64 { return s.Forwarded }},
	{"quic_forwarded_bytes_total", "Bytes of the QUIC packets this generation forwarded to other generations.",
		func(s Stats) uint64 { return s.ForwardedBytes }},
	{"quic_packets_received_total", "QUIC packets other generations forwarded to this one.",
		func(s Stats) uint64 { return s.Received }},
	{"quic_stateless_resets_total", "Stateless resets this generation sent for connections of a generation that is gone.",
		func(s Stats) uint64 { return s.ResetsSent }},
	{"quic_packets_dropped_total", "QUIC packets dropped: a forward channel or this generation's queue full, or a frame of no known format.",
		func(s Stats) uint64 { return s.Dropped }},
}

// endpointsOf are the endpoints of each Upgrader, whose Stats its
// counters sum.
var endpointsOf sync.Map // *tcpgrace.Upgrader -> *endpointSet

type endpointSet struct {
	mu  sync.Mutex
	eps []*Endpoint
}

// count adds e to u's counters; the first endpoint of u adds them to its
// status.
func count(u *tcpgrace.Upgrader, e *Endpoint) error {
	v, loaded := endpointsOf.LoadOrStore(u, &endpointSet{})
	set := v.(*endpointSet)
	set.mu.Lock()
	set.eps = append(set.eps, e)
	set.mu.Unlock()
	if loaded {
		return nil
	}
	for _, d := range counterDefs {
		of := d.of
		if err := u.AddCounter(d.name, d.help, func() uint64 { return set.sum(of) }); err != nil {
			return err
		}
	}
	return nil
}

// sum is of's count summed over the set's endpoints.
func (s *endpointSet) sum(of func(Stats) uint64) uint64 {
	s.mu.Lock()
	eps := append([]*Endpoint(nil), s.eps...)
	s.mu.Unlock()
	var n uint64
	for _, e := range eps {
		n += of(e.Stats())
	}
	return n
}
