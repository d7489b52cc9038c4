package tcpgrace

import (
	"os"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// handed is what the next generation inherits after its readiness pipe,
// in order from fd wire.ListenFDsStart+1: each socket's duplicate as a
// bare fd, then the service's channels as files. A socket is no *os.File
// on its way: NewFile would register it with the runtime's poller and
// Close unregister it, a few microseconds a socket on the upgrade's
// critical path (bench/RESULTS.md).
type handed struct {
	fds []handedFD
}

// handedFD is one entry of handed: a bare fd (f nil), named for errors,
// or a file.
type handedFD struct {
	fd   int
	name string
	f    *os.File
}

// next is the fd the next entry will be in the next generation.
func (h *handed) next() int { return wire.ListenFDsStart + 1 + len(h.fds) }

// addFD adds a bare fd, which h now owns.
func (h *handed) addFD(fd int, name string) { h.fds = append(h.fds, handedFD{fd: fd, name: name}) }

// addFile adds a file, which h now owns.
func (h *handed) addFile(f *os.File) {
	h.fds = append(h.fds, handedFD{fd: int(f.Fd()), name: f.Name(), f: f})
}

// numbers lists every fd, in order.
func (h *handed) numbers() []int {
	fds := make([]int, len(h.fds))
	for i, e := range h.fds {
		fds[i] = e.fd
	}
	return fds
}

// files lists every entry as a file, making files of the bare fds: for
// the paths that pass *os.File on (a takeover, os.StartProcess). h still
// owns them.
func (h *handed) files() []*os.File {
	files := make([]*os.File, len(h.fds))
	for i := range h.fds {
		e := &h.fds[i]
		if e.f == nil {
			e.f = os.NewFile(uintptr(e.fd), e.name)
		}
		files[i] = e.f
	}
	return files
}

// close closes every entry.
func (h *handed) close() {
	for _, e := range h.fds {
		if e.f != nil {
			e.f.Close()
		} else {
			closeFD(e.fd)
		}
	}
	h.fds = nil
}
