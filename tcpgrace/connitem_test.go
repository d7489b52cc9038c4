package tcpgrace

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConnItem: a connection's data on the hand-off channel round-trips,
// and data cut short, of another format or without a listener name is
// refused with what is wrong.
func TestConnItem(t *testing.T) {
	ci := connItem{name: "tcp:127.0.0.1:80", unread: []byte("GET / HT"), state: []byte{1, 2}}
	got, err := decodeConnItem(ci.encode())
	require.NoError(t, err)
	assert.Equal(t, ci, got)

	for _, tt := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "unknown format"},
		{"version", []byte{2}, "unknown format"},
		{"no fields", []byte{1}, "field 0 is cut short"},
		{"name too long", []byte{1, 0, 0, 0, 9, 'a'}, "field 0 is cut short"},
		{"no unread field", connItem{name: "a"}.encode()[:6], "field 1 is cut short"},
		{"no name", connItem{}.encode(), "without a listener name"},
		{"trailing", append(connItem{name: "a"}.encode(), 0), "bytes after its fields"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeConnItem(tt.b)
			assert.ErrorContains(t, err, tt.msg)
		})
	}
}

// FuzzDecodeConnItem: decoding never panics, and what decodes encodes
// back to the same bytes.
func FuzzDecodeConnItem(f *testing.F) {
	f.Add(connItem{name: "web", unread: []byte("x"), state: []byte("y")}.encode())
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := decodeConnItem(b)
		if err == nil && !bytes.Equal(ci.encode(), b) {
			t.Fatalf("%q decodes to %+v, which encodes to %q", b, ci, ci.encode())
		}
	})
}
