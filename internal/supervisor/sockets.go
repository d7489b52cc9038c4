//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/errjoin"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
	"github.com/tcpgrace/tcpgrace/internal/wire"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// socket is one listening socket as the supervisor holds it: a raw fd,
// close-on-exec, that each instance gets as fd [wire.ListenFDsStart]+index. The
// supervisor never accepts on it; holding it keeps the socket and its
// accept queue alive while instances come and go.
type socket struct {
	Listen
	fd    int            // -1 once closed
	ln    net.Listener   // the registry's listener of a stream socket; nil once closed, after a self-upgrade, and for datagrams
	addr  string         // the address it is bound to, for status; set before Run and never changed
	owned *sockfd.FileID // the Unix socket file this supervisor bound, removed when it is closed if its path still leads to it
}

// bound is what bindSockets binds.
type bound struct {
	reg      *tcpgrace.Upgrader // keeps the sockets registered until closeSockets
	socks    []*socket
	ctl      net.Listener   // the control socket, if one is configured
	ctlOwned *sockfd.FileID // its file, if this supervisor bound it
}

// bindSockets binds every socket, and the control socket at control if
// set, with the library's registry, which also takes the sockets of a
// systemd socket activation of the supervisor itself (matched by name,
// then address; activated says whether there was one), replaces stale
// Unix socket files and refuses live ones. The supervisor keeps a raw
// duplicate of each socket.
func bindSockets(ls []Listen, control string, activated bool, log *slog.Logger) (*bound, error) {
	u, err := tcpgrace.New(tcpgrace.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	b := &bound{reg: u}
	for _, l := range ls {
		s, err := bindOne(u, l, activated)
		if err != nil {
			closeSockets(u, b.socks)
			return nil, fmt.Errorf("-listen %s: %w", l, err)
		}
		b.socks = append(b.socks, s)
	}
	if control != "" {
		if b.ctl, err = u.Listen(controlName, "unix", control); err != nil {
			closeSockets(u, b.socks)
			return nil, fmt.Errorf("-control %s: %w", control, err)
		}
		if id, err := sockfd.Stat(control); err == nil && !activated {
			b.ctlOwned = &id
		}
	}
	if err := u.Ready(); err != nil {
		log.Warn("closing inherited sockets no -listen asked for", "err", err)
	}
	return b, nil
}

// activated reports whether systemd passed this process sockets; read it
// before the registry takes the variables.
func activated() bool {
	return os.Getenv(wire.EnvListenPID) == strconv.Itoa(os.Getpid()) && os.Getenv(wire.EnvListenFDs) != ""
}

func bindOne(u *tcpgrace.Upgrader, l Listen, activated bool) (*socket, error) {
	var raw any
	var err error
	if l.packet() {
		raw, err = u.ListenPacket(l.Name, l.Network, l.Address)
	} else {
		raw, err = u.Listen(l.Name, l.Network, l.Address)
	}
	if err != nil {
		return nil, err
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("a %T has no file descriptor", raw)
	}
	fd, err := sockfd.Dup(sc, wire.ListenFDsStart)
	if err != nil {
		return nil, fmt.Errorf("duplicating the socket: %w", err)
	}
	s := &socket{Listen: l, fd: fd}
	s.ln, _ = raw.(net.Listener)
	s.addr = boundAddr(s)
	if l.Network == "unix" && !activated {
		if id, err := sockfd.Stat(l.Address); err == nil {
			s.owned = &id
		}
	}
	return s, nil
}

// adoptSocket checks that fd, inherited from the previous image of this
// supervisor, still is a socket, and makes it close-on-exec again.
func adoptSocket(l Listen, fd int) (*socket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("-listen %s: inherited fd %d: %w", l, fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("-listen %s: inherited fd %d is not a socket", l, fd)
	}
	unix.CloseOnExec(fd)
	s := &socket{Listen: l, fd: fd}
	s.addr = boundAddr(s)
	return s, nil
}

// closeSockets releases the sockets when the supervisor stops: the
// registry's listeners (u is nil after a self-upgrade) and the control
// socket, the raw fds, and the Unix socket files this supervisor bound,
// if their paths still lead to them. A socket closed already is skipped.
func closeSockets(u *tcpgrace.Upgrader, socks []*socket) error {
	var errs []error
	if u != nil {
		errs = append(errs, u.Close())
	}
	for _, s := range socks {
		errs = append(errs, s.close())
	}
	return errjoin.Join(errs...)
}

// close releases one socket: the registry's listener, if it holds one
// (which leaves the registry), the raw fd, and the Unix socket file if
// this supervisor bound it and its path still leads to it.
func (s *socket) close() error {
	var errs []error
	if s.ln != nil {
		errs = append(errs, s.ln.Close())
		s.ln = nil
	}
	if s.fd < 0 {
		return errjoin.Join(errs...)
	}
	unix.Close(s.fd)
	s.fd = -1
	if s.owned != nil {
		if id, err := sockfd.Stat(s.Address); err == nil && id == *s.owned {
			errs = append(errs, os.Remove(s.Address))
		}
	}
	return errjoin.Join(errs...)
}

// stopListening releases the listening sockets when the stop begins
// rather than at exit: no instance will be started any more, so once the
// draining instances have closed their copies too, a new client is
// refused (and finds no Unix socket file) instead of waiting in an
// accept queue that nobody will take it from. The control socket stays
// (status and stop are answered through the drain), and so do datagram
// sockets, which have no queue of clients to refuse, until exit.
func (s *Supervisor) stopListening() {
	var errs []error
	for _, sk := range s.socks {
		if !sk.packet() {
			errs = append(errs, sk.close())
		}
	}
	if err := errjoin.Join(errs...); err != nil {
		s.log.Warn("releasing the sockets", "err", err)
	}
}
