package handoff

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// pair is a connected channel, both ends closed at the end of the test.
func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	a, b, err := Pair()
	require.NoError(t, err, "Pair")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// sides is a giver and a taker that said hello on a new channel.
func sides(t *testing.T) (*Giver, *Taker) {
	t.Helper()
	a, b := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	type res struct {
		tk  *Taker
		err error
	}
	ch := make(chan res, 1)
	go func() { tk, err := NewTaker(ctx, b); ch <- res{tk, err} }()
	g, err := NewGiver(ctx, a)
	require.NoError(t, err, "NewGiver")
	r := <-ch
	require.NoError(t, r.err, "NewTaker")
	return g, r.tk
}

// pipes makes n pipes and returns their read ends, closed at the end of
// the test with the write ends (which keep the pipes distinct files).
func pipes(t *testing.T, n int) []*os.File {
	t.Helper()
	var rs []*os.File
	for range n {
		r, w, err := os.Pipe()
		require.NoError(t, err, "os.Pipe")
		t.Cleanup(func() { r.Close(); w.Close() })
		rs = append(rs, r)
	}
	return rs
}

// fdCount counts this process's open fds.
func fdCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err, "/proc/self/fd should be readable")
	return len(entries)
}

// stat is the device and inode of the file fd is open on.
func stat(t *testing.T, fd int) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(fd, &st), "fstat fd %d", fd)
	return [2]uint64{uint64(st.Dev), uint64(st.Ino)}
}

// rawFD is f's fd number.
func rawFD(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := fdOf(f)
	require.NoError(t, err, "fd of %s", f.Name())
	return fd
}

// isOpen reports whether f is still open (not closed by a giver).
func isOpen(f *os.File) bool {
	_, err := fdOf(f)
	return err == nil
}

// offer runs Offer and Receive at once and returns both results.
func offer(t *testing.T, g *Giver, tk *Taker, items []Item, accept func([]Item) error) (error, []Item, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	type res struct {
		items []Item
		err   error
	}
	ch := make(chan res, 1)
	go func() { got, err := tk.Receive(ctx, accept); ch <- res{got, err} }()
	oerr := g.Offer(ctx, items)
	r := <-ch
	return oerr, r.items, r.err
}
