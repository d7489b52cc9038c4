//go:build !unix

package sdnotify

import (
	"net"
	"time"
)

// sendNow sends one datagram from c to addr, waiting a few milliseconds
// at most for room in the receiver's queue (no service manager speaks
// sd_notify on these systems, so this is only for completeness).
func sendNow(c *net.UnixConn, msg []byte, addr *net.UnixAddr) error {
	c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := c.WriteToUnix(msg, addr)
	return err
}
