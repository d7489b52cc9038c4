package sdnotify

import (
	"fmt"
	"strings"
)

// The fd store (systemd's FileDescriptorStoreMax=): a service hands fds to
// the manager, which keeps them across restarts of the service (and a
// crash under Restart=) and passes them back in LISTEN_FDS, each named in
// LISTEN_FDNAMES by the FDNAME= it was stored under. systemd 252 keeps the
// store on `systemctl restart` and empties it on `systemctl stop`; it drops
// a stored fd that gets POLLHUP, and stores an fd it already holds (the
// same open file description) only once. Nothing tells a service whether
// its unit has a store: without one, systemd closes the fds it is sent.

// Store sends fds to the manager's fd store under name, in one message
// (FDSTORE=1, FDNAME=name): systemd names every fd of one message alike,
// so fds that need names of their own go in messages of their own. name
// must be a valid FDNAME (see [FDName], [CheckFDName]); the error says
// why not, and nothing is sent. Like [Sender.Send] it never waits: a full
// queue loses the message, which is counted and returned as an error. The
// fds stay open here: the manager gets copies. A nil Sender does nothing
// and returns nil.
func (s *Sender) Store(name string, fds ...int) error {
	if s == nil {
		return nil
	}
	if err := CheckFDName(name); err != nil {
		return err
	}
	if len(fds) == 0 {
		return fmt.Errorf("sd_notify: FDSTORE=1 for %q without an fd", name)
	}
	if len(fds) > MaxFDs {
		return fmt.Errorf("sd_notify: FDSTORE=1 for %q with %d fds, more than %d in one message", name, len(fds), MaxFDs)
	}
	return s.sendFDs([]byte("FDSTORE=1\nFDNAME="+name+"\n"), fds, "fd store")
}

// Remove asks the manager to close every fd its store holds under name
// (FDSTOREREMOVE=1, FDNAME=name); a name it does not hold changes
// nothing. It never waits, and is otherwise like [Sender.Store].
func (s *Sender) Remove(name string) error {
	if s == nil {
		return nil
	}
	if err := CheckFDName(name); err != nil {
		return err
	}
	return s.Send("FDSTOREREMOVE=1", "FDNAME="+name)
}

// MaxFDs is the most fds one message carries (the kernel's SCM_MAX_FD).
const MaxFDs = 253

// CheckFDName reports why name is no valid FDNAME, as systemd's
// fdname_is_valid(3) decides: 1 to [MaxFDName] bytes of printable ASCII
// (a space included), no ':'. systemd ignores an invalid one.
func CheckFDName(name string) error {
	if name == "" || len(name) > MaxFDName {
		return fmt.Errorf("sd_notify: an FDNAME is 1 to %d bytes, not %d", MaxFDName, len(name))
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return r < ' ' || r > '~' || r == ':' }); i >= 0 {
		return fmt.Errorf("sd_notify: FDNAME %.40q: byte %d is not printable ASCII other than ':'", name, i)
	}
	return nil
}
