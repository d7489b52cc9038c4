package sdnotify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFDName: socket names map to names systemd's fd store takes (no ':',
// printable ASCII, at most 255 bytes) and back.
func TestFDName(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"web", "web"},
		{"tcp:127.0.0.1:8080", "tcp%3A127.0.0.1%3A8080"},
		{"unix:/run/a b.sock", "unix%3A/run/a b.sock"},
		{"100%", "100%25"},
		{"ctl;admin,1 é", "ctl;admin,1 %C3%A9"},
		{"tab\there", "tab%09here"},
	} {
		got, err := FDName(tt.name)
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.want, got, tt.name)
		assert.NotContains(t, got, ":")
		back, err := ParseFDName(got)
		require.NoError(t, err, got)
		assert.Equal(t, tt.name, back)
	}
	_, err := FDName("")
	assert.ErrorContains(t, err, "empty name")
	_, err = FDName(strings.Repeat(":", 86))
	assert.ErrorContains(t, err, "258 bytes as an FDNAME, more than 255")
	for _, bad := range []struct{ s, msg string }{
		{"", "empty FDNAME"},
		{"a:b", "byte 1 (0x3a) is not allowed"},
		{"a%3", "cut short"},
		{"a%zz", `"%zz" at byte 1 is not %XX`},
		{"a%3a", `"%3a" at byte 1 is not %XX`},
		{"a%20b", `"%20" at byte 1 is not %XX of a byte FDName escapes`},
	} {
		_, err := ParseFDName(bad.s)
		assert.ErrorContains(t, err, bad.msg, "%q", bad.s)
	}
}

// FuzzFDName: whatever FDName makes is a valid FDNAME that ParseFDName
// turns back into the name, and ParseFDName never panics.
func FuzzFDName(f *testing.F) {
	f.Add("tcp:127.0.0.1:8080")
	f.Add("%3A")
	f.Fuzz(func(t *testing.T, s string) {
		if name, err := ParseFDName(s); err == nil {
			if again, err := FDName(name); err == nil && again != s {
				t.Fatalf("%q parses to %q, which maps to %q", s, name, again)
			}
		}
		m, err := FDName(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(m, ":") || len(m) > MaxFDName {
			t.Fatalf("%q maps to %q, not a valid FDNAME", s, m)
		}
		back, err := ParseFDName(m)
		if err != nil || back != s {
			t.Fatalf("%q maps to %q, which parses to %q (%v)", s, m, back, err)
		}
	})
}
