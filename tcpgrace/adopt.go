package tcpgrace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/handoff"
)

// inChannel is this generation's end of the channel from the previous
// one, and what came over it. The nil *inChannel (a first start) has
// inherited nothing.
type inChannel struct {
	conn *handoff.Conn

	once    sync.Once
	settled chan struct{} // closed once the state arrived or none will
	state   []byte
}

// openInChannel takes the channel's end the previous generation handed
// over, if any.
func (u *Upgrader) openInChannel(f *os.File) {
	if f == nil {
		return
	}
	defer f.Close()
	c, err := handoff.NewConn(f)
	if err != nil {
		u.log.Warn("hand-off channel unusable: nothing will be taken over", "err", err)
		return
	}
	u.in = &inChannel{conn: c, settled: make(chan struct{})}
}

// settle records the state (nil: none) the first time it is called.
func (in *inChannel) settle(state []byte) {
	in.once.Do(func() {
		in.state = state
		close(in.settled)
	})
}

// wait blocks until the state settled or ctx ends.
func (in *inChannel) wait(ctx context.Context) {
	if in == nil {
		return
	}
	select {
	case <-in.settled:
	case <-ctx.Done():
	}
}

// close closes the channel: a transaction in progress fails, and the
// previous generation keeps what it offered.
func (in *inChannel) close() {
	if in != nil {
		in.conn.Close()
		in.settle(nil)
	}
}

// Inherited returns the state the previous generation handed over (see
// [Options.State]) when its drain ended. It blocks until then, until the
// previous generation is gone without handing any, or until ctx ends
// (ctx's error). It returns nil, nil on a first start, after a previous
// generation without State, and after one that died first.
//
// In a process started by systemd whose fd store held the state that the
// last serving generation stored as it stopped after Shutdown (a
// `systemctl restart`; a crash stores none: see [Options.DisableFDStore]),
// it returns that state at once, before or after Ready.
func (u *Upgrader) Inherited(ctx context.Context) ([]byte, error) {
	if b, ok := u.storedState(); ok {
		return b, nil
	}
	if u.in == nil {
		return nil, nil
	}
	select {
	case <-u.in.settled:
		return u.in.state, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take receives what the previous generation gives, until it closes its
// end or this generation closes this one. Ready starts it.
func (u *Upgrader) take() {
	in := u.in
	defer u.fdStoreSync() // the parent is done: it sent MAINPID= long ago, we speak for the service
	defer in.settle(nil)
	t, err := handoff.NewTaker(context.Background(), in.conn)
	if err != nil {
		return // the previous generation gave nothing and is gone, or we closed
	}
	defer t.Close()
	for {
		items, err := t.Receive(context.Background(), u.vote)
		if errors.Is(err, handoff.ErrAborted) {
			u.log.Info("hand-off refused; the previous generation keeps it", "err", err)
			continue
		}
		if err != nil {
			if !errors.Is(err, handoff.ErrPeerClosed) {
				u.log.Warn("hand-off channel", "err", err)
			}
			return
		}
		u.adopt(items)
	}
}

// vote accepts a transaction whose every connection's listener a server
// here serves, waiting a little for servers that are being started.
func (u *Upgrader) vote(items []handoff.Item) error {
	for i, it := range items {
		switch it.Kind {
		case itemConn:
			ci, err := decodeConnItem(it.Data)
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			if len(it.Files) != 1 {
				return fmt.Errorf("item %d: a connection with %d fds", i, len(it.Files))
			}
			if u.opts.DrainOnly {
				return errors.New("this generation takes no connections (DrainOnly)")
			}
			if !u.waitClaim(ci.name, claimWait) {
				return fmt.Errorf("no server here serves the connections of listener %q", ci.name)
			}
		case itemState:
			if len(it.Files) > 1 {
				return fmt.Errorf("item %d: a state with %d fds", i, len(it.Files))
			}
		default:
			return fmt.Errorf("item %d: unknown kind %d", i, it.Kind)
		}
	}
	return nil
}

// adopt takes over what a transaction brought: each connection goes to
// the server of its listener, the state is kept for Inherited.
func (u *Upgrader) adopt(items []handoff.Item) {
	for _, it := range items {
		switch it.Kind {
		case itemConn:
			u.adoptConn(it)
		case itemState:
			u.in.settle(readState(it, u.log.Warn))
		}
	}
}

func (u *Upgrader) adoptConn(it handoff.Item) {
	ci, _ := decodeConnItem(it.Data) // vote checked it
	c, err := net.FileConn(it.Files[0])
	it.Files[0].Close()
	if err != nil {
		u.log.Warn("a connection handed over is unusable", "listener", ci.name, "err", err)
		return
	}
	u.mu.Lock()
	l := u.claims[ci.name]
	u.mu.Unlock()
	tc := u.track(c, ci.name)
	t := trackedOf(tc)
	t.resumed, t.unread, t.state = true, ci.unread, ci.state
	if l == nil || !l.push(tc) {
		// Its server stopped since the vote: this generation is leaving too.
		u.log.Warn("a connection handed over found no server: closed", "listener", ci.name)
		tc.Close()
	}
}

// readState is the state an item carries: its data, or what its memfd
// holds. warn hears of a memfd that cannot be read.
func readState(it handoff.Item, warn func(string, ...any)) []byte {
	if len(it.Files) == 0 {
		return it.Data
	}
	f := it.Files[0]
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, MaxState+1), MaxState+1))
	if err == nil && len(b) > MaxState {
		err = fmt.Errorf("more than MaxState (%d) bytes", MaxState)
	}
	if err != nil {
		warn("the state handed over is unreadable", "err", err)
		return nil
	}
	return b
}

// waitClaim reports whether a server serves listener name, waiting up to
// wait for one.
func (u *Upgrader) waitClaim(name string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		u.mu.Lock()
		_, ok := u.claims[name]
		u.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connItem is a connection's data on the channel: the listener it came
// from, the bytes its server read but did not use, and the server's
// state for it.
type connItem struct {
	name          string
	unread, state []byte
}

// connItemVersion is the first byte of a connItem; another is refused.
const connItemVersion = 1

// encode is version (1 byte), then name, unread and state, each a uint32
// length and the bytes.
func (ci connItem) encode() []byte {
	b := []byte{connItemVersion}
	for _, f := range [][]byte{[]byte(ci.name), ci.unread, ci.state} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func decodeConnItem(b []byte) (connItem, error) {
	if len(b) < 1 || b[0] != connItemVersion {
		return connItem{}, errors.New("a connection of an unknown format")
	}
	b = b[1:]
	var fields [3][]byte
	for i := range fields {
		if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
			return connItem{}, fmt.Errorf("a connection's field %d is cut short", i)
		}
		n := binary.BigEndian.Uint32(b)
		fields[i], b = b[4:4+n], b[4+n:]
	}
	if len(b) != 0 || len(fields[0]) == 0 {
		return connItem{}, errors.New("a connection without a listener name, or with bytes after its fields")
	}
	return connItem{name: string(fields[0]), unread: fields[1], state: fields[2]}, nil
}

// adoptListener hands a server the connections handed over for the
// listeners it serves, from its Accept. Close stops it taking more; those
// it took already still come out of Accept, then net.ErrClosed.
type adoptListener struct {
	u     *Upgrader
	names []string
	addr  net.Addr

	mu     sync.Mutex
	queue  []net.Conn // tracked; Resumed reads what the previous generation left with each
	closed bool
	wake   chan struct{} // has room for one: something to look at
}

// claimFor is claim, unless this generation takes no connections
// (DrainOnly): then nil.
func (u *Upgrader) claimFor(lns []net.Listener) net.Listener {
	if u.opts.DrainOnly {
		return nil
	}
	if al := u.claim(lns); al != nil {
		return al
	}
	return nil
}

// claim makes the adoptListener for the listeners among lns that the
// Upgrader handed out; nil if none.
func (u *Upgrader) claim(lns []net.Listener) *adoptListener {
	var names []string
	var addr net.Addr
	for _, ln := range lns {
		if l, ok := ln.(*listener); ok && l.u == u {
			names, addr = append(names, l.s.name), ln.Addr()
		}
	}
	if len(names) == 0 {
		return nil
	}
	al := &adoptListener{u: u, names: names, addr: addr, wake: make(chan struct{}, 1)}
	u.mu.Lock()
	for _, n := range names {
		u.claims[n] = al
	}
	u.mu.Unlock()
	return al
}

// push queues c; false if the listener is closed.
func (l *adoptListener) push(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// Accept returns the next connection handed over; net.ErrClosed once the
// listener is closed and none is left.
func (l *adoptListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		<-l.wake
	}
}

// Close stops taking connections; safe to call twice.
func (l *adoptListener) Close() error {
	l.u.mu.Lock()
	for _, n := range l.names {
		if l.u.claims[n] == l {
			delete(l.u.claims, n)
		}
	}
	l.u.mu.Unlock()
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// Addr is the address of one of the listeners it serves.
func (l *adoptListener) Addr() net.Addr { return l.addr }
