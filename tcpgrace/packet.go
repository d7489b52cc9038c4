package tcpgrace

import (
	"fmt"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/errjoin"
)

// pastDeadline is the read deadline that stops reading on a packet conn:
// a blocked read returns, and every later one fails at once, without a
// system call, so the datagrams stay in the shared socket for the
// generation that serves.
var pastDeadline = time.Unix(1, 0)

// splitSockets separates stream listeners from packet conns.
func splitSockets(sockets []*socket) (stream, packet []*socket) {
	for _, s := range sockets {
		if s.pc != nil {
			packet = append(packet, s)
		} else {
			stream = append(stream, s)
		}
	}
	return stream, packet
}

// stopReading makes every read on the packet conns fail, without closing
// them: replies to what was read already can still be written.
func stopReading(packets []*socket) {
	for _, s := range packets {
		s.pc.SetReadDeadline(pastDeadline)
	}
}

// closeSockets closes this process's copies of sockets; a copy held by
// another generation keeps each open.
func closeSockets(sockets []*socket) error {
	var errs []error
	for _, s := range sockets {
		if err := s.closeRaw(); err != nil {
			errs = append(errs, fmt.Errorf("tcpgrace: closing %q: %w", s.name, err))
		}
	}
	return errjoin.Join(errs...)
}
