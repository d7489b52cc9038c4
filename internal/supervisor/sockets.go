//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/bind"
	"github.com/tcpgrace/tcpgrace/internal/errjoin"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// socket is one listening socket as the supervisor holds it: a raw fd,
// close-on-exec, that each instance gets as fd [wire.ListenFDsStart]+index. The
// supervisor never accepts on it; holding it keeps the socket and its
// accept queue alive while instances come and go.
type socket struct {
	Listen
	fd    int            // -1 once closed
	conn  io.Closer      // the listener or packet conn bound or taken at a cold start; nil once closed, and after a self-upgrade
	addr  string         // the address it is bound to, for status; set before Run and never changed
	owned *sockfd.FileID // the Unix socket file this supervisor bound, removed when it is closed if its path still leads to it
}

// bound is what bindFrom binds.
type bound struct {
	socks    []*socket
	ctl      net.Listener   // the control socket, if one is configured
	ctlOwned *sockfd.FileID // its file, if this supervisor bound it
}

// bindFrom binds every socket, and the control socket at control if
// set. A socket in inh (a systemd socket activation of the supervisor
// itself, or a takeover's) is taken (matched by name, then address), any
// other is bound anew (a stale Unix socket file is replaced, a live one
// refused). The sockets in inh no -listen asked for are closed. The
// supervisor keeps a raw duplicate of each socket.
func bindFrom(inh *wire.Files, ls []Listen, control string, log *slog.Logger) (*bound, error) {
	b := &bound{}
	for _, l := range ls {
		s, err := bindOne(inh, l, log)
		if err != nil {
			b.close(inh)
			return nil, fmt.Errorf("-listen %s: %w", l, err)
		}
		b.socks = append(b.socks, s)
	}
	if control != "" {
		ln, file, err := open(inh, Listen{Name: controlName, Network: "unix", Address: control}, log)
		if err != nil {
			b.close(inh)
			return nil, fmt.Errorf("-control %s: %w", control, err)
		}
		b.ctl, b.ctlOwned = ln.(net.Listener), fileID(file)
	}
	closeUnclaimed(inh, log)
	return b, nil
}

// close releases what bindFrom bound before it failed, and the
// activated sockets nobody claimed.
func (b *bound) close(inh *wire.Files) {
	closeSockets(b.socks)
	inh.CloseUnclaimed()
}

// closeUnclaimed closes the activated sockets no -listen asked for.
func closeUnclaimed(inh *wire.Files, log *slog.Logger) {
	for _, en := range inh.Unclaimed() {
		log.Info("closed an inherited socket nobody asked for", "listener", en.Name, "network", en.Network,
			"addr", en.Address)
	}
	if err := inh.CloseUnclaimed(); err != nil {
		log.Warn("closing inherited sockets no -listen asked for", "err", err)
	}
}

// socketMode is the permission of the Unix socket files the supervisor
// binds, the control socket's too: only the owner may connect (the
// library's DefaultUnixMode).
const socketMode = 0o600

// open takes the socket l from inh or binds it anew, and logs it. It
// returns a listener, or a packet conn for a datagram socket, and the
// Unix socket file it bound, if any.
func open(inh *wire.Files, l Listen, log *slog.Logger) (io.Closer, *bind.File, error) {
	var conn io.Closer
	var file *bind.File
	var inherited bool
	var addr net.Addr
	if l.packet() {
		pc, inh, err := takeOrListenPacket(inh, l)
		if err != nil {
			return nil, nil, err
		}
		conn, inherited, addr = pc, inh, pc.LocalAddr()
	} else {
		ln, f, inh, err := takeOrListen(inh, l)
		if err != nil {
			return nil, nil, err
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the file goes only while its path still leads to ours
		}
		conn, file, inherited, addr = ln, f, inh, ln.Addr()
	}
	log.Info("listening", "listener", l.Name, "network", l.Network, "addr", addr.String(), "inherited", inherited)
	return conn, file, nil
}

// takeOrListen takes the stream socket l from inh (inherited), or binds
// it anew: a Unix socket file gets socketMode and is returned.
func takeOrListen(inh *wire.Files, l Listen) (ln net.Listener, file *bind.File, inherited bool, err error) {
	ln, err = inh.Listener(l.Name, l.Network, l.Address)
	if err != nil || ln != nil {
		return ln, nil, ln != nil, err
	}
	ln, file, err = bind.Listen(l.Network, l.Address, socketMode)
	return ln, file, false, err
}

// takeOrListenPacket is takeOrListen for a datagram socket.
func takeOrListenPacket(inh *wire.Files, l Listen) (pc net.PacketConn, inherited bool, err error) {
	pc, err = inh.PacketConn(l.Name, l.Network, l.Address)
	if err != nil || pc != nil {
		return pc, pc != nil, err
	}
	pc, err = bind.ListenPacket(l.Network, l.Address)
	return pc, false, err
}

// fileID is the device and inode of file; nil for none.
func fileID(file *bind.File) *sockfd.FileID {
	if file == nil {
		return nil
	}
	return &file.ID
}

// bindOne takes or binds l and keeps a raw duplicate of its socket.
func bindOne(inh *wire.Files, l Listen, log *slog.Logger) (*socket, error) {
	conn, file, err := open(inh, l, log)
	if err != nil {
		return nil, err
	}
	fd, err := sockfd.Dup(conn.(syscall.Conn), wire.ListenFDsStart)
	if err != nil {
		conn.Close()
		if file != nil {
			file.Remove()
		}
		return nil, fmt.Errorf("duplicating the socket: %w", err)
	}
	s := &socket{Listen: l, fd: fd, conn: conn, owned: fileID(file)}
	s.addr = boundAddr(s)
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
// listeners and packet conns, the raw fds, and the Unix socket files this
// supervisor bound, if their paths still lead to them. A socket closed
// already is skipped.
func closeSockets(socks []*socket) error {
	var errs []error
	for _, s := range socks {
		errs = append(errs, s.close())
	}
	return errjoin.Join(errs...)
}

// close releases one socket: the listener or packet conn, if it holds
// one, the raw fd, and the Unix socket file if this supervisor bound it
// and its path still leads to it.
func (s *socket) close() error {
	var errs []error
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
		s.conn = nil
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
