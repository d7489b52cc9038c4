package sdnotify

import (
	"strconv"
	"time"
)

// Reloading is the message that starts a reload (for tcpgrace, an
// upgrade) with status in STATUS=: systemd 253 and later want the
// monotonic clock with RELOADING=1 (MONOTONIC_USEC=, left out where the
// clock is unknown).
func Reloading(status string) []string {
	lines := []string{"RELOADING=1", "STATUS=" + status}
	if usec, ok := monotonicUsec(); ok {
		lines = append(lines, "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
	}
	return lines
}

// ExtendTimeout is the EXTEND_TIMEOUT_USEC= line that pushes the
// manager's current timeout (start, reload or stop) to d from now.
func ExtendTimeout(d time.Duration) string {
	return "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10)
}
