package tcpgrace

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// handed is what the next generation inherits after its readiness pipe,
// in order from fd wire.ListenFDsStart+1: each registered socket, then
// the service's channels as files.
//
// A socket goes to an exec'd child as the very fd its listener holds, no
// duplicate: [handed.pin] keeps each open while the child starts, and the
// child's own copy is the one fork and exec make. A duplicate per socket,
// and its close once the child started, were two system calls a socket
// on the upgrade's critical path, and an *os.File per socket more (NewFile
// registers it with the runtime's poller, Close unregisters it)
// (bench/RESULTS.md). The paths that pass *os.File on (a takeover,
// os.StartProcess) get duplicates from [handed.files].
type handed struct {
	fds     []handedFD
	closing *sync.RWMutex // the Upgrader's closing: see pin
}

// handedFD is one entry of handed: a registered socket (sock set) or a
// file, named for errors.
type handedFD struct {
	sock    syscall.Conn
	guarded bool // the socket's every close holds closing shared (a listener's)
	name    string
	f       *os.File // a file added, or a socket's duplicate made by files
}

// next is the fd the next entry will be in the next generation.
func (h *handed) next() int { return wire.ListenFDsStart + 1 + len(h.fds) }

// addSocket adds a registered socket; guarded says that its every close
// holds closing shared. h never closes it.
func (h *handed) addSocket(c syscall.Conn, name string, guarded bool) {
	h.fds = append(h.fds, handedFD{sock: c, guarded: guarded, name: name})
}

// addFile adds a file, which h now owns.
func (h *handed) addFile(f *os.File) { h.fds = append(h.fds, handedFD{name: f.Name(), f: f}) }

// pin calls start with every entry's fd, in order, while each socket's
// fd stays open, so that the fd number start passes on cannot name
// another file by then. A listener's fd is taken while closing is held
// exclusively, which its every close waits for. A packet conn, which the
// user may close directly, is held inside its RawConn's Control, which a
// Close waits for too; those nest, one level a conn (a level a listener
// too made the start 0.1 to 0.8 ms slower with 256 of them, the time of
// growing the goroutine's stack). A socket closed since it was added
// fails the start, with its name.
func (h *handed) pin(start func(fds []int) error) error {
	h.closing.Lock()
	defer h.closing.Unlock()
	fds := make([]int, len(h.fds))
	var held []int // the entries held by Control
	for i := range h.fds {
		switch e := &h.fds[i]; {
		case e.sock == nil:
			fds[i] = int(e.f.Fd())
		case e.guarded:
			if err := withFD(e, func(fd int) { fds[i] = fd }); err != nil {
				return err
			}
		default:
			held = append(held, i)
		}
	}
	return h.hold(held, fds, start)
}

// hold takes the fds of the entries held inside nested Controls, then
// calls start.
func (h *handed) hold(held, fds []int, start func(fds []int) error) error {
	if len(held) == 0 {
		return start(fds)
	}
	var err error
	if cerr := withFD(&h.fds[held[0]], func(fd int) {
		fds[held[0]] = fd
		err = h.hold(held[1:], fds, start)
	}); cerr != nil {
		return cerr
	}
	return err
}

// withFD calls f with e's socket's fd inside its RawConn's Control; a
// closed socket is an error that names it.
func withFD(e *handedFD, f func(fd int)) error {
	rc, err := e.sock.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { f(int(fd)) })
	}
	if err != nil {
		return fmt.Errorf("tcpgrace: %q was closed during the upgrade: %w", e.name, err)
	}
	return nil
}

// files lists every entry as a file, duplicating each socket (which h
// then owns, until close): for the paths that pass *os.File on.
func (h *handed) files() ([]*os.File, error) {
	files := make([]*os.File, len(h.fds))
	for i := range h.fds {
		e := &h.fds[i]
		if e.f == nil {
			fd, err := dupSocket(e.sock, e.name)
			if err != nil {
				return nil, err
			}
			e.f = os.NewFile(uintptr(fd), e.name)
		}
		files[i] = e.f
	}
	return files, nil
}

// close closes every file of h: those added, and the sockets'
// duplicates that files made.
func (h *handed) close() {
	for _, e := range h.fds {
		if e.f != nil {
			e.f.Close()
		}
	}
	h.fds = nil
}
