package sockfd

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFileIDJSON pins the JSON form of FileID: the supervisor's hand-over
// state carries it from one build to the next across a self-upgrade, so
// a renamed field would lose the socket files' ownership.
func TestFileIDJSON(t *testing.T) {
	b, err := json.Marshal(FileID{Dev: 2049, Ino: 1<<64 - 1})
	require.NoError(t, err)
	assert.Equal(t, `{"Dev":2049,"Ino":18446744073709551615}`, string(b), "the exact encoding")

	var id FileID
	require.NoError(t, json.Unmarshal([]byte(`{"Dev":7,"Ino":42}`), &id), "what an earlier build wrote")
	assert.Equal(t, FileID{Dev: 7, Ino: 42}, id)
}
