package wire

import (
	"fmt"
	"strings"
)

// decodeSystemd reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as
// sd_listen_fds_with_names(3) does: the fds are 3..3+LISTEN_FDS-1, and the
// variables count only in the process whose pid is LISTEN_PID. Network and
// Address of the entries are left empty; [Take] reads them off the sockets.
// Names may repeat: systemd gives every fd of one socket unit that unit's
// name.
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
		e.Entries = append(e.Entries, Entry{Name: name, FD: ListenFDsStart + i})
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
