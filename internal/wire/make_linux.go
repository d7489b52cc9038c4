package wire

import (
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// maker makes inherited sockets listeners and packet conns, on one
// goroutine of Open's. net makes them from an *os.File, whose fd it
// duplicates. An *os.File of the inherited fd itself, which is
// non-blocking, would be registered with the runtime's poller by NewFile
// and unregistered by Close: two epoll_ctl calls a socket more, on a lock
// that Open's goroutines contend for (bench/RESULTS.md). The maker's
// stand-in is one blocking file, which the poller never sees, and each
// inherited socket in turn takes its fd (dup3) for net to duplicate.
type maker struct {
	stand *os.File // made at the first socket
}

// make makes en's socket. The fd inherited stays open.
func (m *maker) make(en Entry) (socket, error) {
	if m.stand == nil {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return socket{}, os.NewSyscallError("pipe2", err)
		}
		unix.Close(p[1])
		m.stand = os.NewFile(uintptr(p[0]), "inherited socket")
	}
	if err := unix.Dup3(en.FD, int(m.stand.Fd()), unix.O_CLOEXEC); err != nil {
		return socket{}, os.NewSyscallError("dup3", err)
	}
	return fileSocket(m.stand, en.Network)
}

// close closes the stand-in, which holds the last socket made, as net
// holds its own duplicate.
func (m *maker) close() {
	if m.stand != nil {
		m.stand.Close()
	}
}

// closeInherited closes the fds inherited once net holds its duplicates:
// in one close_range(2) when they are a run of consecutive numbers, as an
// exec'd hand-off's are, each on its own otherwise.
func closeInherited(fds []int) {
	if len(fds) == 0 {
		return
	}
	sorted := slices.Clone(fds)
	slices.Sort(sorted)
	first, last := sorted[0], sorted[len(sorted)-1]
	// The entries' fds are unique (checkUnique): a run of len(fds)
	// numbers from first to last is theirs and nothing else's.
	if last-first+1 == len(sorted) && unix.CloseRange(uint(first), uint(last), 0) == nil {
		return
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
}
