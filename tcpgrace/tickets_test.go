//go:build linux

package tcpgrace

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestTicketKeysRotate: a new key goes first once the newest is a day
// old, keys a week old are dropped, and every config gets the new list.
func TestTicketKeysRotate(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	cfg := &tls.Config{}
	require.NoError(t, u.ShareTicketKeys(cfg))
	tk := &u.tickets
	tk.mu.Lock()
	require.Len(t, tk.keys, 1, "a first start makes one key")
	first := tk.keys[0]
	now := first.Created
	require.NoError(t, tk.rotateLocked(now.Add(time.Hour)))
	assert.Len(t, tk.keys, 1, "no new key within a day")
	require.NoError(t, tk.rotateLocked(now.Add(ticketRotation)))
	require.Len(t, tk.keys, 2, "a new key after a day")
	assert.Equal(t, first, tk.keys[1], "the old key stays, second")
	tk.keys[1].Created = now.Add(ticketRotation - ticketLifetime)
	require.NoError(t, tk.rotateLocked(now.Add(ticketRotation)))
	assert.Len(t, tk.keys, 1, "a key a week old is dropped")
	tk.mu.Unlock()

	cfg2 := &tls.Config{}
	require.NoError(t, u.ShareTicketKeys(cfg2))
	assert.Len(t, tk.cfgs, 2)
	require.NoError(t, u.Close())
	assert.ErrorIs(t, u.ShareTicketKeys(&tls.Config{}), ErrClosed)
	assert.Error(t, u.ShareTicketKeys(nil))
}

// TestSecretEntryDroppedAsKey: the entry that carries the service secret
// (created at the Unix epoch) is, to a build that reads it as one more
// ticket key, a key past its week, dropped before any config gets it, so
// that such a build takes the pipe and never encrypts with the secret.
func TestSecretEntryDroppedAsKey(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	tk := &u.tickets
	tk.mu.Lock()
	defer tk.mu.Unlock()
	now := time.Now()
	for _, keys := range [][]wire.TicketKey{{{Created: time.Unix(0, 0)}}, {{Created: now}, {Created: time.Unix(0, 0)}}} {
		tk.keys = keys
		require.NoError(t, tk.rotateLocked(now))
		require.Len(t, tk.keys, 1, "only a real key stays")
		assert.NotEqual(t, int64(0), tk.keys[0].Created.UnixNano(), "the secret's entry is gone")
	}
	tk.timer.Stop()
}
