package tcpgrace

import (
	"fmt"
	"os"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// handed is what the next generation inherits after its readiness pipe,
// in order from fd wire.ListenFDsStart+1: each registered socket, then
// the service's channels as files.
//
// A socket goes to an exec'd child as the very fd its listener holds, no
// duplicate: [handed.pin] holds each open while the child starts, and
// the child's own copy is the one fork and exec make. A duplicate per
// socket, and its close once the child started, were two system calls a
// socket on the upgrade's critical path, and an *os.File per socket more
// (NewFile registers it with the runtime's poller, Close unregisters it)
// (bench/RESULTS.md). The paths that pass *os.File on (a takeover,
// os.StartProcess) get duplicates from [handed.files].
type handed struct {
	fds []handedFD
}

// handedFD is one entry of handed: a registered socket (sock set) or a
// file, named for errors.
type handedFD struct {
	sock syscall.Conn
	name string
	f    *os.File // a file added, or a socket's duplicate made by files
}

// next is the fd the next entry will be in the next generation.
func (h *handed) next() int { return wire.ListenFDsStart + 1 + len(h.fds) }

// addSocket adds a registered socket. h never closes it.
func (h *handed) addSocket(c syscall.Conn, name string) {
	h.fds = append(h.fds, handedFD{sock: c, name: name})
}

// addFile adds a file, which h now owns.
func (h *handed) addFile(f *os.File) { h.fds = append(h.fds, handedFD{name: f.Name(), f: f}) }

// pin calls start with every entry's fd, in order, while each socket's
// fd stays open: each is taken inside its RawConn's Control, which holds
// a Close that races the upgrade until start returns, so that the fd
// number cannot be given to another file meanwhile. A socket closed since
// it was added fails the start, with its name.
func (h *handed) pin(start func(fds []int) error) error {
	return h.pinFrom(0, make([]int, len(h.fds)), start)
}

// pinFrom is pin from entry i on; fds holds the fds of those before.
func (h *handed) pinFrom(i int, fds []int, start func(fds []int) error) error {
	for ; i < len(h.fds); i++ {
		e := &h.fds[i]
		if e.sock == nil {
			fds[i] = int(e.f.Fd())
			continue
		}
		var err error
		cerr := errNotPinned
		if rc, rerr := e.sock.SyscallConn(); rerr == nil {
			cerr = rc.Control(func(fd uintptr) {
				fds[i] = int(fd)
				err = h.pinFrom(i+1, fds, start)
			})
		}
		if cerr != nil {
			return fmt.Errorf("tcpgrace: %q was closed during the upgrade: %w", e.name, cerr)
		}
		return err
	}
	return start(fds)
}

// errNotPinned is a socket whose RawConn could not be had.
var errNotPinned = fmt.Errorf("no raw connection: %w", syscall.EBADF)

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
