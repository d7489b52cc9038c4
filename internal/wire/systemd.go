package wire

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
)

// StateFDName is the name under which a generation puts its state blob (a
// memfd) in systemd's fd store, and under which LISTEN_FDNAMES hands it
// back: [Open] sets that fd aside for [Files.StoredState] instead of
// checking it as a socket. It is reserved: sockets are stored under
// sdnotify.FDName of their registry name, and one registered under this
// very name is not stored.
const StateFDName = "tcpgrace-state"

// decodeSystemd reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as
// sd_listen_fds_with_names(3) does: the fds are 3..3+LISTEN_FDS-1, and the
// variables count only in the process whose pid is LISTEN_PID. Network and
// Address of the entries are left empty; [Take] reads them off the sockets.
// Names may repeat: systemd gives every fd of one socket unit that unit's
// name. A name from the fd store is the FDNAME it was stored under,
// sdnotify.FDName of a registry name ("tcp%3A127.0.0.1%3A8080"): it is
// mapped back (see [storedName]), so that the socket is claimed by the
// registry name it had.
func decodeSystemd(lookup Lookup, pid int) (*Env, error) {
	bad := func(variable, format string, args ...any) error {
		return &DecodeError{Var: variable, Entry: -1, Reason: fmt.Sprintf(format, args...), Err: ErrMalformed}
	}
	pidStr, ok := lookup(EnvListenPID)
	if !ok {
		return nil, bad(EnvListenPID, "missing while %s is set", EnvListenFDs)
	}
	want, err := parseInt(pidStr, 1)
	if err != nil {
		return nil, bad(EnvListenPID, "%v", err)
	}
	if want != pid {
		return nil, nil // meant for another process
	}
	nStr, _ := lookup(EnvListenFDs)
	n, err := parseInt(nStr, 0)
	if err != nil {
		return nil, bad(EnvListenFDs, "%v", err)
	}
	if n > MaxEntries {
		return nil, bad(EnvListenFDs, "%d fds, more than %d", n, MaxEntries)
	}
	names := make([]string, n)
	if v, ok := lookup(EnvListenFDNames); ok {
		if len(v) > MaxValueLen {
			return nil, bad(EnvListenFDNames, "value is %d bytes, more than %d", len(v), MaxValueLen)
		}
		if names, err = systemdNames(v, n); err != nil {
			return nil, err
		}
	}
	e := &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1}
	for i, name := range names {
		e.Entries = append(e.Entries, Entry{Name: storedName(name), FD: ListenFDsStart + i})
	}
	return e, nil
}

func systemdNames(v string, n int) ([]string, error) {
	names := strings.Split(v, ":")
	if v == "" {
		names = nil
	}
	if len(names) != n {
		return nil, &DecodeError{Var: EnvListenFDNames, Entry: -1, Err: ErrMalformed,
			Reason: fmt.Sprintf("%d names for %s=%d", len(names), EnvListenFDs, n)}
	}
	for i, name := range names {
		if err := CheckName(name); err != nil {
			return nil, &DecodeError{Var: EnvListenFDNames, Entry: i, Err: ErrMalformed, Reason: err.Error()}
		}
	}
	return names, nil
}

// storedName is the registry name that sdnotify.FDName mapped to name,
// or name itself when name is no such mapping (a socket unit's name, or
// FileDescriptorName=, which FDName leaves as it is unless it holds a
// '%'): "tcp%3A127.0.0.1%3A8080" is "tcp:127.0.0.1:8080" again.
func storedName(name string) string {
	if !strings.Contains(name, "%") {
		return name
	}
	if n, err := sdnotify.ParseFDName(name); err == nil && CheckName(n) == nil {
		return n
	}
	return name
}

// splitStoredState takes the state blob that systemd's fd store handed
// back out of e's entries, so that it is not checked as a socket, and
// returns it as a close-on-exec file; nil if none. The blob is the entry
// named [StateFDName] whose fd is a regular file (a memfd): a socket of
// that name (FileDescriptorName=tcpgrace-state) stays an entry.
func (e *Env) splitStoredState() *os.File {
	if e.Source != EnvListenFDs {
		return nil
	}
	i := slices.IndexFunc(e.Entries, func(en Entry) bool { return en.Name == StateFDName && isStateFile(en.FD) })
	if i < 0 {
		return nil
	}
	fd := e.Entries[i].FD
	e.Entries = slices.Delete(e.Entries, i, i+1)
	return os.NewFile(uintptr(fd), StateFDName)
}

// StoredState hands out, once, the state blob that systemd's fd store
// handed back (see [StateFDName]): a file to read from offset 0, which
// the caller closes. nil if none came, or it was handed out before.
func (f *Files) StoredState() *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stored
	f.stored = nil
	return st
}
