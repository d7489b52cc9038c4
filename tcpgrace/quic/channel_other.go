//go:build !linux

package quic

import (
	"fmt"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// openChannel needs Linux's abstract Unix sockets and SO_PASSCRED.
func openChannel(service string, tag byte) (channel, error) {
	return nil, fmt.Errorf("%w: tcpgrace/quic forwards over Linux abstract Unix sockets", tcpgrace.ErrNotSupported)
}
