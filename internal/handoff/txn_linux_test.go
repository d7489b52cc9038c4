package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestRoundTrip: items with 0, 1, 253 (one full frame), 254 (a second
// frame) and 600 fds (three frames) arrive whole: kind, data, and each fd
// open on the same file as the one sent, in order, close-on-exec. The
// giver closes its files only after the ack, the taker's stay open.
func TestRoundTrip(t *testing.T) {
	g, tk := sides(t)
	for _, n := range []int{0, 1, 253, 254, 600} {
		t.Run(fmt.Sprint(n, " fds"), func(t *testing.T) {
			files := pipes(t, n)
			want := make([][2]uint64, n)
			for i, f := range files {
				want[i] = stat(t, rawFD(t, f))
			}
			data := bytes.Repeat([]byte{byte(n)}, n+1)
			items := []Item{{Kind: 7, Data: data, Files: files}, {Kind: 8, Data: []byte("after")}}
			oerr, got, rerr := offer(t, g, tk, items, nil)
			require.NoError(t, oerr, "Offer")
			require.NoError(t, rerr, "Receive")
			require.Len(t, got, 2)
			assert.Equal(t, uint16(7), got[0].Kind)
			assert.Equal(t, data, got[0].Data)
			assert.Equal(t, Item{Kind: 8, Data: []byte("after")}, got[1], "the item after a split one")
			require.Len(t, got[0].Files, n)
			for i, f := range got[0].Files {
				fd := rawFD(t, f)
				assert.Equal(t, want[i], stat(t, fd), "fd %d of %d is the file sent", i, n)
				flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
				require.NoError(t, err)
				assert.NotZero(t, flags&unix.FD_CLOEXEC, "received fd %d is close-on-exec", fd)
				f.Close()
			}
			for i, f := range files {
				assert.False(t, isOpen(f), "the giver closed its file %d after the ack", i)
			}
		})
	}
}

// TestDataLimit: data of MaxData bytes goes over; one byte more is
// refused by Offer before anything is sent, and the channel stays usable.
func TestDataLimit(t *testing.T) {
	g, tk := sides(t)
	over := []Item{{Kind: 1, Data: make([]byte, MaxData+1)}}
	err := g.Offer(context.Background(), over)
	assert.ErrorIs(t, err, ErrTooLarge)
	assert.ErrorContains(t, err, fmt.Sprintf("item 0: %d bytes of data, more than %d", MaxData+1, MaxData))

	at := []Item{{Kind: 1, Data: bytes.Repeat([]byte{'x'}, MaxData)}}
	oerr, got, rerr := offer(t, g, tk, at, nil)
	require.NoError(t, oerr)
	require.NoError(t, rerr)
	assert.Equal(t, at[0].Data, got[0].Data, "data at the limit arrives whole")
}

// TestTakerAborts: the taker's accept refuses; the giver gets the reason
// and keeps its files (the listener still accepts), the taker closed what
// it received, and the next transaction on the channel commits.
func TestTakerAborts(t *testing.T) {
	g, tk := sides(t)
	ln, addr := listenerFile(t)
	files := append(pipes(t, 2), ln)
	before := fdCount(t)
	refuse := func(items []Item) error {
		assert.Len(t, items[0].Files, 3, "accept sees the files")
		return errors.New("no room")
	}
	oerr, _, rerr := offer(t, g, tk, []Item{{Kind: 1, Files: files}}, refuse)
	var ae *AbortError
	require.ErrorAs(t, oerr, &ae, "Offer returns the taker's abort")
	assert.Equal(t, "taker", ae.By)
	assert.Equal(t, "no room", ae.Reason)
	assert.ErrorIs(t, rerr, ErrAborted)
	assert.Equal(t, before, fdCount(t), "the taker closed what it received, the giver closed nothing")
	for _, f := range files {
		assert.True(t, isOpen(f), "the giver keeps %s", f.Name())
	}
	accepts(t, ln, addr)

	oerr, got, rerr := offer(t, g, tk, []Item{{Kind: 2, Data: []byte("next")}}, nil)
	require.NoError(t, oerr, "the channel is usable after an abort")
	require.NoError(t, rerr)
	assert.Equal(t, "next", string(got[0].Data))
}

// fakeTaker says hello on b, then reads frames until one of kind k (the
// giver's commit? or commit), answering prepared to commit? when k is
// commit, and closes b: a taker that dies in the middle.
func fakeTaker(t *testing.T, b *Conn, k uint16) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer b.Close()
		if _, err := hello(context.Background(), b, "taker", Version, Version); err != nil {
			t.Errorf("fake taker: hello: %v", err)
			return
		}
		for {
			fr, err := b.recv()
			if err != nil {
				t.Errorf("fake taker: %v", err)
				return
			}
			closeFDs(fr.fds)
			if fr.h.Kind == KindCommitQ && k == KindCommit {
				_ = b.send(Header{Kind: KindPrepared, Txn: fr.h.Txn}, nil, nil)
			}
			if fr.h.Kind == k {
				return
			}
		}
	}()
	return done
}

// TestTakerDies: the taker's end closes while the giver waits for its
// vote, or for its ack; the giver returns an error naming the phase and
// keeps every file (the listener still accepts).
func TestTakerDies(t *testing.T) {
	for _, c := range []struct {
		at    uint16
		phase string
	}{{KindCommitQ, PhaseVote}, {KindCommit, PhaseAck}} {
		t.Run(c.phase, func(t *testing.T) {
			a, b := pair(t)
			done := fakeTaker(t, b, c.at)
			g, err := NewGiver(context.Background(), a)
			require.NoError(t, err)
			ln, addr := listenerFile(t)
			files := append(pipes(t, 300), ln)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err = g.Offer(ctx, []Item{{Kind: 1, Files: files}})
			<-done
			var pe *PhaseError
			require.ErrorAs(t, err, &pe, "a *PhaseError expected, got %v", err)
			assert.Equal(t, c.phase, pe.Phase, "%v", err)
			assert.ErrorIs(t, err, ErrPeerClosed)
			assert.ErrorContains(t, err, "giver: transaction 1: "+c.phase)
			for _, f := range files {
				require.True(t, isOpen(f), "the giver keeps %s", f.Name())
			}
			accepts(t, ln, addr)
			assert.ErrorIs(t, g.Offer(ctx, nil), ErrBroken, "a giver after a failure")
		})
	}
}

// TestTakerSilent: a taker that never answers; the giver's deadline ends
// the transaction with ctx's error and the giver keeps its files.
func TestTakerSilent(t *testing.T) {
	a, b := pair(t)
	go func() { _, _ = hello(context.Background(), b, "taker", Version, Version) }()
	g, err := NewGiver(context.Background(), a)
	require.NoError(t, err)
	files := pipes(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = g.Offer(ctx, []Item{{Kind: 1, Files: files}})
	var pe *PhaseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, PhaseVote, pe.Phase)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	for _, f := range files {
		assert.True(t, isOpen(f), "the giver keeps %s", f.Name())
	}
}

// takerOf says hello on both ends, a the giver's and b the taker's, and
// returns the taker once the giver's hello has read the taker's: the test
// reads a next, and two reads at once would race for the same frames.
func takerOf(t *testing.T, a, b *Conn) *Taker {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = hello(context.Background(), a, "giver", Version, Version)
	}()
	tk, err := NewTaker(context.Background(), b)
	require.NoError(t, err)
	<-done
	return tk
}

// TestGiverDies: the giver's end closes after its items and commit?; the
// taker's Receive fails and it has closed every fd it received.
func TestGiverDies(t *testing.T) {
	a, b := pair(t)
	tk := takerOf(t, a, b)
	g := &Giver{c: a, version: Version, txn: 1}
	files := pipes(t, 5)
	before := fdCount(t)
	require.NoError(t, g.sendItem(Item{Kind: 1, Files: files}, fdsOf(t, files)))
	require.NoError(t, a.send(Header{Kind: KindCommitQ, Txn: 1}, []byte{0, 0, 0, 1, 0, 0, 0, 5}, nil))
	accept := func([]Item) error { a.Close(); return nil } // the giver dies while the taker votes
	_, err := tk.Receive(context.Background(), accept)
	var pe *PhaseError
	require.ErrorAs(t, err, &pe, "got %v", err)
	assert.Contains(t, []string{PhaseVote, PhaseCommit}, pe.Phase)
	assert.ErrorIs(t, err, ErrPeerClosed)
	assert.Equal(t, before-2, fdCount(t), "the taker closed what it received, and both ends of the channel are closed")
}

// TestVersions: a taker that speaks only version 2, in its hello or in
// its frame headers, gives ErrVersion on both sides of the hello.
func TestVersions(t *testing.T) {
	t.Run("hello range", func(t *testing.T) {
		a, b := pair(t)
		ch := make(chan error, 1)
		go func() { _, err := hello(context.Background(), b, "taker", 2, 2); ch <- err }()
		_, err := NewGiver(context.Background(), a)
		assert.ErrorIs(t, err, ErrVersion)
		assert.ErrorContains(t, err, "the peer speaks versions 2 to 2, this build 1 to 1")
		assert.ErrorIs(t, <-ch, ErrVersion, "the v2 side sees it too")
	})
	t.Run("header version", func(t *testing.T) {
		a, b := pair(t)
		go func() {
			h := Header{Version: 2, Kind: KindHello, Len: 4}
			_ = b.sendRaw(append(h.encode(nil), 0, 2, 0, 2), nil)
		}()
		_, err := NewGiver(context.Background(), a)
		var fe *FrameError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "version", fe.Field)
		assert.ErrorIs(t, err, ErrVersion)
		assert.ErrorContains(t, err, "version: 2, this build speaks 1")
	})
}

// TestNoFDLeak: 200 transactions, committed and aborted in turn, leave
// the process with the fds it had.
func TestNoFDLeak(t *testing.T) {
	g, tk := sides(t)
	src := pipes(t, 3)
	before := fdCount(t)
	for i := range 200 {
		var files []*os.File
		for _, f := range src {
			fd, err := unix.FcntlInt(uintptr(rawFD(t, f)), unix.F_DUPFD_CLOEXEC, 0)
			require.NoError(t, err)
			files = append(files, os.NewFile(uintptr(fd), "dup"))
		}
		var accept func([]Item) error
		if i%2 == 1 {
			accept = func([]Item) error { return errors.New("not this one") }
		}
		oerr, got, rerr := offer(t, g, tk, []Item{{Kind: 1, Files: files[:2]}, {Kind: 2, Files: files[2:]}}, accept)
		if i%2 == 1 {
			require.ErrorIs(t, oerr, ErrAborted, "transaction %d", i)
			require.ErrorIs(t, rerr, ErrAborted)
			closeItems([]Item{{Files: files}})
			continue
		}
		require.NoError(t, oerr, "transaction %d", i)
		require.NoError(t, rerr)
		closeItems(got)
	}
	assert.Equal(t, before, fdCount(t), "open fds before and after 200 transactions")
}

// TestGiverAborts: the giver answers the taker's prepared with abort; the
// taker returns the giver's reason and has closed what it received.
func TestGiverAborts(t *testing.T) {
	a, b := pair(t)
	tk := takerOf(t, a, b)
	g := &Giver{c: a, version: Version, txn: 1}
	files := pipes(t, 4)
	fds := fdsOf(t, files)
	before := fdCount(t)
	go func() {
		_ = g.sendItem(Item{Kind: 1, Files: files}, fds)
		_ = a.send(Header{Kind: KindCommitQ, Txn: 1}, []byte{0, 0, 0, 1, 0, 0, 0, 4}, nil)
		if _, err := g.expect(KindPrepared); err == nil {
			_ = a.send(Header{Kind: KindAbort, Txn: 1}, []byte("changed my mind"), nil)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := tk.Receive(ctx, nil)
	var ae *AbortError
	require.ErrorAs(t, err, &ae, "got %v", err)
	assert.Equal(t, "giver", ae.By)
	assert.Equal(t, "changed my mind", ae.Reason)
	assert.Equal(t, before, fdCount(t), "the taker closed what it received")
}

// TestTakerIdle: a Receive whose ctx ends before any frame returns ctx's
// error and leaves the channel usable.
func TestTakerIdle(t *testing.T) {
	g, tk := sides(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := tk.Receive(ctx, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	oerr, got, rerr := offer(t, g, tk, []Item{{Kind: 3}}, nil)
	require.NoError(t, oerr, "a transaction after an idle Receive")
	require.NoError(t, rerr)
	assert.Equal(t, uint16(3), got[0].Kind)
}

// TestTakerTimesOut: the giver sends its items and commit? and then
// nothing; the taker's deadline passes while it waits for the commit, it
// closes what it received and the channel, and the giver, had it been
// waiting, reads the channel closed.
func TestTakerTimesOut(t *testing.T) {
	a, b := pair(t)
	tk := takerOf(t, a, b)
	g := &Giver{c: a, version: Version, txn: 1}
	files := pipes(t, 3)
	require.NoError(t, g.sendItem(Item{Kind: 1, Files: files}, fdsOf(t, files)))
	require.NoError(t, a.send(Header{Kind: KindCommitQ, Txn: 1}, []byte{0, 0, 0, 1, 0, 0, 0, 3}, nil))
	before := fdCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := tk.Receive(ctx, nil)
	var pe *PhaseError
	require.ErrorAs(t, err, &pe, "got %v", err)
	assert.Equal(t, PhaseCommit, pe.Phase)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, before-1, fdCount(t), "the taker received 3 fds and closed them, and its end of the channel")
	_, err = g.expect(KindPrepared)
	require.NoError(t, err, "the taker voted prepared")
	_, err = a.recv()
	assert.ErrorIs(t, err, ErrPeerClosed, "then the giver reads the channel closed")
}
