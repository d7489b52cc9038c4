package tests

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestParseAB: ab's connect, receive and exception failures and its
// non-2xx answers count; its "Length" failures (a body whose length
// differs from the first one's: a pid with one digit more) do not; a
// summary whose failures cannot be read counts as a failure.
func TestParseAB(t *testing.T) {
	for _, tt := range []struct {
		name, out  string
		ok, failed int
	}{
		{"clean", "Complete requests:      100\nFailed requests:        0\n", 100, 0},
		{"lengths only", "Complete requests:      100\nFailed requests:        60\n   (Connect: 0, Receive: 0, Length: 60, Exceptions: 0)\n", 100, 0},
		{"connect and receive", "Complete requests:      100\nFailed requests:        5\n   (Connect: 2, Receive: 1, Length: 0, Exceptions: 2)\n", 95, 5},
		{"non-2xx", "Complete requests:      100\nFailed requests:        0\nNon-2xx responses:      3\n", 97, 3},
		{"unknown form", "Complete requests:      100\nFailed requests:        7\n", 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := parseAB(toolOutput{stdout: tt.out})
			assert.Equal(t, tt.ok, r.ok, "ok")
			assert.Equal(t, tt.failed, r.failed, "failed: %s", r.detail)
		})
	}
}
