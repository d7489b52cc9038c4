//go:build linux

package tcpgrace

import (
	"net"
	"testing"
)

// BenchmarkTrack is the whole cost the registry adds to an accepted
// connection: wrap and track it, then untrack it on Close. The accept
// itself, measured in bench/, costs about a thousand times more.
func BenchmarkTrack(b *testing.B) {
	u := newColdUpgrader(b, Options{})
	a, c := net.Pipe()
	defer a.Close()
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		tc := u.track(c, "bench").(*otherConn).t
		if tc.closed.CompareAndSwap(false, true) { // what Close does, without closing the pipe
			u.untrack(tc)
		}
	}
}
