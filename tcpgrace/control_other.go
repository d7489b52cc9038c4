//go:build !linux

package tcpgrace

import (
	"net"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// The control socket checks its clients with SO_PEERCRED, which is Linux's.

func controlSupported() error { return ErrNotSupported }

func (u *Upgrader) tightenControlMode(name string) {}

func listenStatusChannel(path string, pid int) (net.Listener, error) { return nil, ErrNotSupported }

func statusOf(path string, pid int, timeout time.Duration) (*control.Status, error) {
	return nil, ErrNotSupported
}
