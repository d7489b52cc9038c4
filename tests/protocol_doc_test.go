package tests

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestProtocolDocExample: the TCPGRACE_FDS value docs/PROTOCOL.md gives
// as its example is what the hand-off writes: it decodes (from the pid
// it names as the parent) and encodes back to the same text (issue #20).
func TestProtocolDocExample(t *testing.T) {
	doc := readFile(t, "../docs/PROTOCOL.md")
	m := regexp.MustCompile(`(?m)^` + wire.EnvFDs + `=(\S+)$`).FindSubmatch(doc)
	require.NotNil(t, m, "docs/PROTOCOL.md gives an example line %s=...", wire.EnvFDs)
	value := string(m[1])
	lookup := func(key string) (string, bool) {
		if key == wire.EnvFDs {
			return value, true
		}
		return "", false
	}
	env, err := wire.Decode(lookup, os.Getpid(), 4242)
	require.NoError(t, err, "docs/PROTOCOL.md's example decodes")
	assert.Equal(t, value, env.Encode(4242), "docs/PROTOCOL.md's example is what Encode writes")
}
