package tests

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// udpAnswer reads one datagram from c within d.
func udpAnswer(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	require.NoError(t, err, "an answer within %v", d)
	return string(buf[:n])
}

// TestUDPReplyAfterHandOff is the regression test for UDP replies lost at
// hand-off: the old generation's packet conn was closed at once, so its
// answer to a datagram it had read just before failed ("use of closed
// network connection"). The old generation reads a datagram, holds its
// answer until it has handed over, and must still deliver it; it stops
// reading at the hand-off, and the new generation answers what follows
// (held until its own stop).
func TestUDPReplyAfterHandOff(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startRole(t, "udp", "-udp", "127.0.0.1:0", "-reply-delay", "20ms", "-hold-replies")
	addr := s.addr("udp:127.0.0.1:0")
	c, err := net.Dial("udp4", addr)
	require.NoError(t, err)
	defer c.Close()
	old := s.pid()
	_, err = c.Write([]byte("before"))
	require.NoError(t, err)
	waitLog(t, s, fmt.Sprintf(`msg="udp read" pid=%d data=before`, old))
	pid := s.upgrade() // the old generation exits 0 once its replies are out
	logs := s.logs.String()
	assert.NotContains(t, logs, "udp reply failed", "the old generation's replies after the hand-off are sent")
	assert.Contains(t, logs, fmt.Sprintf(`msg="udp: stopped reading" pid=%d`, old), "the old generation stops reading at the hand-off")
	assert.Equal(t, fmt.Sprintf("%d before", old), udpAnswer(t, c, requestBudget), "the datagram the old generation read is answered by it")
	// The new generation reads what follows, and holds its answer too,
	// until its stop.
	_, err = c.Write([]byte("after"))
	require.NoError(t, err)
	waitLog(t, s, fmt.Sprintf(`msg="udp read" pid=%d data=after`, pid))
	s.stop()
	assert.Equal(t, fmt.Sprintf("%d after", pid), udpAnswer(t, c, requestBudget), "the new generation answers what it read before its stop")
	assert.NotContains(t, s.logs.String(), "udp reply failed", "no reply failed at the stop either")
}
