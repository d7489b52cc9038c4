//go:build linux

package wire

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWatched: a child is watched by its parent from Ready until the
// parent closes the readiness pipe's read end (its ready grace is over) or
// the child leaves; never before Ready, and never without a parent.
func TestWatched(t *testing.T) {
	r, wfd := readyPipe(t)
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd, Writer: 4242})
	_, watched := f.Watched()
	assert.False(t, watched, "not before Ready")
	require.NoError(t, f.Ready())
	parent, watched := f.Watched()
	assert.True(t, watched, "after Ready, while the parent holds the read end")
	assert.Equal(t, 4242, parent, "the parent's pid")
	require.NoError(t, r.Close(), "the parent's grace ends")
	_, watched = f.Watched()
	assert.False(t, watched, "no longer once the read end is closed")

	r, wfd = readyPipe(t)
	f = openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd, Writer: 4242})
	require.NoError(t, f.Ready())
	require.NoError(t, f.Leave())
	_, watched = f.Watched()
	assert.False(t, watched, "not after Leave")
	r.Close()

	first, err := Open(nil)
	require.NoError(t, err)
	require.NoError(t, first.Ready())
	_, watched = first.Watched()
	assert.False(t, watched, "never on a first start")
}
