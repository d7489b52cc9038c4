//go:build linux

package supervisor

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// TestHandOverOwnedEncoding pins how the hand-over state names the
// socket files a supervisor bound ({"Dev":..,"Ino":..}): a self-upgrade
// between two builds decodes one build's state with the other's code, so
// a changed encoding would make the new image forget which files are
// its own to remove.
func TestHandOverOwnedEncoding(t *testing.T) {
	id := &sockfd.FileID{Dev: 2049, Ino: 77}
	h := handOver{V: stateVersion,
		Sockets: []handedSocket{{Listen: Listen{Name: "unix", Network: "unix", Address: "/run/a.sock"}, FD: 3, Owned: id}},
		Control: &handedControl{Path: "/run/ctl", FD: 4, Owned: id},
	}
	b, err := json.Marshal(h)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"fd":3,"owned":{"Dev":2049,"Ino":77}`, "a socket's file")
	assert.Contains(t, string(b), `"control":{"path":"/run/ctl","fd":4,"owned":{"Dev":2049,"Ino":77}}`, "the control socket's file")

	// What an earlier build wrote decodes to the same files.
	got, err := decodeHandOver(`{"v":1,"sockets":[{"Name":"unix","Network":"unix","Address":"/run/a.sock","fd":3,` +
		`"owned":{"Dev":2049,"Ino":77}}],"control":{"path":"/run/ctl","fd":4,"owned":{"Dev":2049,"Ino":77}}}`)
	require.NoError(t, err)
	require.Len(t, got.Sockets, 1)
	assert.Equal(t, id, got.Sockets[0].Owned, "a socket's file")
	require.NotNil(t, got.Control)
	assert.Equal(t, id, got.Control.Owned, "the control socket's file")
}
