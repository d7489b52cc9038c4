package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/bind"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// socket is one registry entry: a named socket this generation owns and
// will hand to the next one.
type socket struct {
	name, network, address string
	raw                    syscall.Conn   // *net.TCPListener, *net.UnixListener or *net.UDPConn
	ln                     *listener      // what Listen handed out (stream)
	pc                     net.PacketConn // what ListenPacket handed out (packet)
	unix                   *bind.File     // for unix sockets: the file to unlink on release
	closedByUpgrader       atomic.Bool    // closed by a hand-off or Shutdown, not by the user
	closedByUser           atomic.Bool    // a listener's Close began
	inherited              bool           // came from the parent, which may still serve it
	foreign                bool           // its file belongs to someone else (systemd): never removed
}

// rawOnce is c with its RawConn made once: a net listener's SyscallConn
// allocates a new one at each call, and an upgrade asks each socket for
// it twice.
func rawOnce(c syscall.Conn) syscall.Conn {
	rc, err := c.SyscallConn()
	return cachedRaw{rc, err}
}

type cachedRaw struct {
	rc  syscall.RawConn
	err error
}

func (c cachedRaw) SyscallConn() (syscall.RawConn, error) { return c.rc, c.err }

// closeRaw closes this process's copy of the socket without unlinking
// anything; a copy held by another generation keeps it open.
func (s *socket) closeRaw() error {
	if !s.closedByUpgrader.CompareAndSwap(false, true) {
		return nil // a hand-off and a Shutdown may both get here
	}
	return s.closeFD()
}

// closeFD is closeRaw once closedByUpgrader is set, by this caller.
func (s *socket) closeFD() error {
	if s.pc != nil {
		return s.pc.Close()
	}
	s.ln.u.closing.RLock()
	defer s.ln.u.closing.RUnlock()
	return s.ln.Listener.Close()
}

// Listen returns the stream listener registered as name, creating it on
// first use: the socket inherited under that name if there is one,
// otherwise a new socket bound to address. network is tcp, tcp4, tcp6 or
// unix. A second Listen of the same name returns the same listener; asking
// for it with another network or address fails with [ErrNameConflict].
//
// The listener counts the connections it accepts, which Shutdown waits
// for. Closing it releases the socket (the port or path can be bound
// again) unless a next generation already holds a copy. Unix socket files
// get [Options.UnixMode] before they accept; a stale socket file (nobody
// listening) is replaced on a cold start, a live one is an error wrapping
// syscall.EADDRINUSE; a socket file that systemd made is never removed.
// An empty address is an error (for any port say ":0"). Listen fails with
// [ErrUpgradeInProgress], [ErrUpgraded] or [ErrClosed] outside the serving
// state.
func (u *Upgrader) Listen(name, network, address string) (net.Listener, error) {
	if !wire.KnownNetwork(network) || wire.IsPacket(network) {
		return nil, fmt.Errorf("tcpgrace: Listen %q: network %q is not tcp, tcp4, tcp6 or unix", name, network)
	}
	s, err := u.register(name, network, address, u.newListener)
	if err != nil {
		return nil, err
	}
	return s.ln, nil
}

// ListenPacket is [Upgrader.Listen] for packet sockets: network is udp,
// udp4 or udp6. The caller may use the result as a *net.UDPConn.
//
// A packet conn drains as a listener does. After a successful Upgrade,
// and from the start of Shutdown or Close, this generation stops reading:
// [Upgrader.Exit] is closed first, then a read blocked on the conn
// returns, and every later one fails at once, with an error wrapping
// os.ErrDeadlineExceeded (a net.Error whose Timeout is true), so the
// datagrams that follow go to the generation that serves. A read loop
// should therefore end at its first error once Exit is closed, and must
// not set read deadlines of its own after that, which would make it read
// again. Replies to datagrams already read can still be written: the conn
// stays open until Shutdown has waited for the connections it tracks (at
// its end), or Close. Shutdown cannot tell that a reply is still being
// computed: a program that answers datagrams in goroutines waits for them
// before it calls Shutdown.
func (u *Upgrader) ListenPacket(name, network, address string) (net.PacketConn, error) {
	if !wire.IsPacket(network) {
		return nil, fmt.Errorf("tcpgrace: ListenPacket %q: network %q is not udp, udp4 or udp6", name, network)
	}
	s, err := u.register(name, network, address, u.newPacketConn)
	if err != nil {
		return nil, err
	}
	return s.pc, nil
}

// register is get-or-create under u.mu.
func (u *Upgrader) register(name, network, address string, create func(*socket) error) (*socket, error) {
	if err := wire.CheckName(name); err != nil {
		return nil, fmt.Errorf("tcpgrace: %w", err)
	}
	if address == "" {
		return nil, fmt.Errorf("tcpgrace: %q: empty %s address (for any port say \":0\")", name, network)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.checkLocked(opListen); err != nil {
		return nil, fmt.Errorf("%w: cannot register %q", err, name)
	}
	if s := u.sockets[name]; s != nil && s.open() {
		if s.network != network || s.address != address {
			return nil, fmt.Errorf("%w: %q is %s %s, asked for as %s %s",
				ErrNameConflict, name, s.network, s.address, network, address)
		}
		return s, nil
	}
	s := &socket{name: name, network: network, address: address}
	if err := create(s); err != nil {
		if errors.Is(err, wire.ErrMismatch) {
			err = wrap(ErrNameConflict, err)
		}
		return nil, err
	}
	u.sockets[name] = s
	return s, nil
}

func (u *Upgrader) newListener(s *socket) error {
	ln, err := u.inh.Listener(s.name, s.network, s.address)
	inherited := ln != nil
	if err == nil && ln == nil {
		ln, err = u.bindStream(s)
	}
	if err != nil {
		return err
	}
	s.inherited = inherited
	s.foreign = inherited && s.network == "unix" && u.inh.Foreign(s.name)
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // the next generation may serve this path
		if inherited && !s.foreign {
			s.unix = u.inheritedPath(s.name, ln.Addr().String()) // the bound path, whatever was asked for
		}
	}
	s.raw = rawOnce(ln.(syscall.Conn))
	s.ln = &listener{Listener: ln, u: u, s: s}
	// The control socket says "control socket: answering" at Ready.
	if !isControl(s.name) && u.log.Enabled(context.Background(), slog.LevelInfo) {
		u.log.Info("listening", "listener", s.name, "network", s.network, "addr", ln.Addr().String(), "inherited", inherited)
	}
	return nil
}

// inheritedPath is the socket file at path of the inherited Unix socket
// name as the generation that bound it recorded it (device and inode,
// carried in the hand-off), not whatever file is at path now: a file
// that another server put there since is never taken for ours. nil when
// the hand-off records none; the file is then never removed.
func (u *Upgrader) inheritedPath(name, path string) *bind.File {
	f, ok := u.inh.Owned(name)
	if !ok {
		return nil
	}
	return &bind.File{Path: path, ID: f.FileID}
}

// bindStream binds a new stream socket for s; a Unix socket file gets
// Options.UnixMode (the control socket's, controlMode) and becomes s's.
func (u *Upgrader) bindStream(s *socket) (net.Listener, error) {
	mode := u.opts.unixMode()
	if strings.HasPrefix(s.name, controlName) {
		mode = controlMode // whatever UnixMode says
	}
	ln, file, err := bind.Listen(s.network, s.address, mode)
	if errors.Is(err, bind.ErrNotSupported) {
		err = ErrNotSupported
	}
	if err != nil {
		return nil, fmt.Errorf("tcpgrace: Listen %q: %w", s.name, err)
	}
	s.unix = file
	return ln, nil
}

func (u *Upgrader) newPacketConn(s *socket) error {
	pc, err := u.inh.PacketConn(s.name, s.network, s.address)
	inherited := pc != nil
	if err == nil && pc == nil {
		pc, err = bind.ListenPacket(s.network, s.address)
		if err != nil {
			err = fmt.Errorf("tcpgrace: ListenPacket %q: %w", s.name, err)
		}
	}
	if err != nil {
		return err
	}
	s.raw, s.pc = rawOnce(pc.(syscall.Conn)), pc
	if u.log.Enabled(context.Background(), slog.LevelInfo) {
		u.log.Info("listening", "listener", s.name, "network", s.network, "addr", pc.LocalAddr().String(), "inherited", inherited)
	}
	return nil
}

// open reports whether s is not closed: a listener's own flags say (all
// its closes go through this package), a packet conn's fd is asked (its
// user may close it directly).
func (s *socket) open() bool {
	if s.ln != nil {
		return !s.closedByUser.Load() && !s.closedByUpgrader.Load()
	}
	return isOpen(s.raw)
}

// liveSocketsLocked returns the open sockets in name order, dropping the
// ones the user closed. u.mu must be held.
func (u *Upgrader) liveSocketsLocked() []*socket {
	var out []*socket
	for name, s := range u.sockets {
		if !s.open() {
			delete(u.sockets, name)
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *socket) int {
		if a.name < b.name {
			return -1
		}
		return 1
	})
	return out
}

// release is called when the user closes a listener: the Unix socket file
// goes too if this generation owns it (see ownsPathLocked).
func (u *Upgrader) release(s *socket) {
	u.mu.Lock()
	owned := u.ownsPathLocked(s)
	if u.sockets[s.name] == s {
		delete(u.sockets, s.name)
	}
	u.mu.Unlock()
	if owned {
		s.unix.Remove()
	}
}

// ownsPathLocked reports whether releasing s may remove its socket file:
// never a foreign one (s.unix is nil), not while a next generation takes
// it over or has taken it, not once closed (Shutdown removed what was
// ours), and an inherited one only once our parent heard that we serve:
// until then a failed start leaves the parent serving it.
// u.mu must be held.
func (u *Upgrader) ownsPathLocked(s *socket) bool {
	switch {
	case s.unix == nil:
		return false
	case s.inherited:
		return u.state == serving || u.state == leaving
	}
	return u.state == starting || u.state == readying || u.state == serving || u.state == leaving
}
