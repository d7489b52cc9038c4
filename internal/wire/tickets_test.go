//go:build unix

package wire

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTicketKeysRoundTrip: keys and their creation times come back as
// they were written, through the pipe Open reads.
func TestTicketKeysRoundTrip(t *testing.T) {
	keys := []TicketKey{{Created: time.Unix(1700000000, 123)}, {Created: time.Unix(1690000000, 0)}}
	keys[0].Key[0], keys[1].Key[31] = 7, 9
	got, secret, err := DecodeTicketKeys(EncodeTicketKeys(keys, nil))
	require.NoError(t, err)
	assert.Nil(t, secret, "no secret written, none read")
	require.Len(t, got, 2)
	for i := range keys {
		assert.True(t, keys[i].Created.Equal(got[i].Created), "key %d's age", i)
		assert.Equal(t, keys[i].Key, got[i].Key, "key %d", i)
	}

	r, w, err := os.Pipe()
	require.NoError(t, err)
	_, err = w.Write(EncodeTicketKeys(keys, nil))
	require.NoError(t, err)
	w.Close()
	f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Tickets: ownFD(t, r)})
	require.NoError(t, err)
	assert.Len(t, f.TicketKeys(), 2)
	_, ok := f.Secret()
	assert.False(t, ok, "a pipe without a secret gives none")
}

// TestSecretRoundTrip: the service secret goes last, after the keys, and
// comes back apart from them, through the pipe Open reads, with or
// without ticket keys beside it.
func TestSecretRoundTrip(t *testing.T) {
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(i + 1)
	}
	for _, keys := range [][]TicketKey{nil, {{Created: time.Unix(1700000000, 5)}}} {
		b := EncodeTicketKeys(keys, &secret)
		assert.Equal(t, byte(1), b[0], "the version stays 1: builds without the secret read it")
		got, gotSecret, err := DecodeTicketKeys(b)
		require.NoError(t, err)
		assert.Len(t, got, len(keys), "the secret is no ticket key")
		require.NotNil(t, gotSecret, "the secret should come back")
		assert.Equal(t, secret, *gotSecret)

		r, w, err := os.Pipe()
		require.NoError(t, err)
		_, err = w.Write(b)
		require.NoError(t, err)
		w.Close()
		f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Tickets: ownFD(t, r)})
		require.NoError(t, err)
		assert.Len(t, f.TicketKeys(), len(keys), "TicketKeys leaves the secret out")
		s, ok := f.Secret()
		assert.True(t, ok, "Files.Secret finds the secret")
		assert.Equal(t, secret, s)
	}
}

// TestTicketKeysMalformed: a tickets pipe of another format, count or
// length, or an fd that is no pipe, fails with what is wrong.
func TestTicketKeysMalformed(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "unknown format"},
		{"version", []byte{2, 0}, "unknown format"},
		{"short", []byte{1, 1, 0}, "1 ticket keys in 3 bytes"},
		{"too many", append([]byte{1, 65}, make([]byte, 65*40)...), "65 ticket keys"},
		{"secret not last", append([]byte{1, 2}, make([]byte, 80)...), "entry 1 of 2 is the service secret, which goes last"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeTicketKeys(tt.b)
			assert.ErrorContains(t, err, tt.msg)
		})
	}
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	defer f.Close()
	_, err = Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Tickets: int(f.Fd())})
	require.ErrorIs(t, err, ErrBadFD)
	assert.ErrorContains(t, err, fmt.Sprintf("tickets fd %d: not a pipe", f.Fd()))
	_, err = Decode(fakeLookup(fdsOnly(fdsValue("web,4,tcp,%3A80")+";tickets=4")), testPID, testPPID)
	assert.ErrorContains(t, err, "fd 4 is the tickets pipe's fd")
}

// FuzzDecodeTicketKeys: decoding never panics, and what decodes encodes
// back to the same bytes.
func FuzzDecodeTicketKeys(f *testing.F) {
	f.Add(EncodeTicketKeys([]TicketKey{{Created: time.Unix(1, 2)}}, nil))
	f.Add(EncodeTicketKeys([]TicketKey{{Created: time.Unix(1, 2)}}, &[32]byte{3}))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, secret, err := DecodeTicketKeys(b)
		if err == nil && string(EncodeTicketKeys(keys, secret)) != string(b) {
			t.Fatalf("%x decodes to %d keys (secret: %v), which encode to %x", b, len(keys), secret != nil, EncodeTicketKeys(keys, secret))
		}
	})
}

// ownFD gives the read end of a pipe to what the test hands it to (Open
// closes it): a dup, with r closed, so that r's finalizer never closes
// the fd number again once something else has it.
func ownFD(t *testing.T, r *os.File) int {
	t.Helper()
	fd, err := syscall.Dup(int(r.Fd()))
	require.NoError(t, err)
	r.Close()
	return fd
}
