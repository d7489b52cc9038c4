// Package inherit is how a program takes the sockets it was handed at
// start: by a tcpgrace parent generation, by the tcpgrace run supervisor,
// or by systemd's socket activation (LISTEN_FDS). A program built on
// package tcpgrace does not need it: tcpgrace.New takes them the same way.
//
//	files, err := inherit.Take()
//	if err != nil {
//		log.Fatal(err) // a malformed hand-off: the parent is told why
//	}
//	ln, err := files.Listener("web", "tcp", ":8080")
//	if err == nil && ln == nil {
//		ln, err = net.Listen("tcp", ":8080") // nothing inherited: a first start
//	}
//	...
//	files.Ready() // a tcpgrace parent, if any, stops accepting and drains
//
// Take reads the variables, checks every fd they name, and removes the
// variables from the environment, so that no process started later sees
// them. Each socket is then claimed once, by name, with the network and
// address it was registered with. A socket from systemd is matched by its
// FileDescriptorName=, then by its address.
//
// Errors name the variable, the entry and what is wrong with it.
package inherit

import (
	"net"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// ErrTaken is returned by a second [Take] in one process, including one
// after tcpgrace.New, which takes the sockets itself.
var ErrTaken = wire.ErrTaken

// Files are the sockets this process inherited, until they are claimed.
// Its methods are safe for concurrent use.
type Files struct{ w *wire.Files }

// Take returns the sockets this process inherited. A first start, with
// nothing inherited, returns an empty Files and no error. Take may be
// called once per process.
//
// If the hand-off is malformed or names an fd that is not the socket it
// says, Take returns the error and, if a tcpgrace parent waits, tells it
// why: the parent's upgrade fails with the same reason and it keeps
// serving.
func Take() (*Files, error) {
	w, err := wire.Take()
	if err != nil {
		return nil, err
	}
	return &Files{w: w}, nil
}

// Listener returns the inherited stream socket called name, or (nil, nil)
// if none was. network and address must be those it was registered with;
// anything else is an error that names both. The caller owns the
// listener.
func (f *Files) Listener(name, network, address string) (net.Listener, error) {
	return f.w.Listener(name, network, address)
}

// PacketConn is [Files.Listener] for packet sockets: udp, udp4 or udp6.
func (f *Files) PacketConn(name, network, address string) (net.PacketConn, error) {
	return f.w.PacketConn(name, network, address)
}

// Ready tells a tcpgrace parent, if one waits, that this process serves:
// the parent stops accepting and drains. Call it once every socket is
// claimed and serving. Without a parent it does nothing.
func (f *Files) Ready() error { return f.w.Ready() }

// Fail tells a tcpgrace parent, if one waits, that this process will not
// become ready, and why: the parent's upgrade fails with that reason and
// it keeps serving. Exit after it. Without a parent it does nothing.
func (f *Files) Fail(reason error) error { return f.w.Fail(reason) }

// Generation is 1 on a first start or a start by systemd, and one more
// than the parent's after a tcpgrace upgrade.
func (f *Files) Generation() int { return f.w.Generation() }

// Close closes every inherited socket nobody claimed, so that a socket
// this version no longer serves is released once the older generation
// exits. Claimed sockets belong to their callers and stay open.
func (f *Files) Close() error { return f.w.CloseUnclaimed() }
