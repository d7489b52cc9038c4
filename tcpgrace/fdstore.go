package tcpgrace

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/handoff"
	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// systemd's fd store (FileDescriptorStoreMax= in the unit). Under a
// service manager (NOTIFY_SOCKET set) the serving generation keeps the
// store in step with its registry, so that `systemctl restart` and a
// crash under Restart= hand the sockets to the next start (LISTEN_FDS,
// LISTEN_FDNAMES) and no connection is refused meanwhile: the kernel
// socket stays open in systemd while no process holds it, and clients
// wait in its accept queue.
//
//   - At Ready, each TCP or UDP socket this generation bound itself goes
//     in (FDSTORE=1, FDNAME=sdnotify.FDName of its registry name), one
//     message per socket. An inherited socket does not: one from the store
//     is there already, one from a parent generation was stored by the
//     generation that bound it, and one from a socket unit is systemd's
//     own (storing it would keep it open after the socket unit stops).
//     Unix sockets are not stored: Shutdown removes their files, and a
//     stored one would come back unreachable.
//   - At Ready, each inherited socket that nobody claimed and Ready closed
//     comes out (FDSTOREREMOVE=1, FDNAME=), so that systemd no longer
//     holds a listener this version does not serve; so does the state
//     blob this start got from the store (it is read once: see below).
//   - When the serving generation stops (Shutdown, as for SIGTERM from
//     `systemctl restart` or `stop`) and has [Options.State], what State
//     returns goes in as a memfd named [wire.StateFDName] when its drain
//     is over, and the next start reads it with [Upgrader.Inherited].
//     A crash stores no state, and the next start then inherits none:
//     the state is taken out of the store by the start that read it, so
//     a stale one never comes back. Close stores none either.
//
// Only the main process may speak under the default NotifyAccess=main.
// A generation started by Upgrade becomes it when its parent sends
// MAINPID=, after this generation's Ready: it sends its store messages
// once its parent has closed the hand-off channel (after MAINPID=), or at
// Ready if there is no channel (then NotifyAccess=all makes them count).
// Nothing says whether the unit has a store (systemd 252 sets no
// variable): without one, systemd closes the fds it is sent, and logs a
// warning for each message; [Options.DisableFDStore] sends nothing.
// Messages never wait (see package sdnotify); a lost one is logged.

// fdStore is what one generation did or has to do with the fd store.
type fdStore struct {
	mu    sync.Mutex
	stale []string // registry names of inherited sockets closed as unclaimed, to take out

	stateOnce sync.Once
	state     []byte // the state the store handed back, read once
	hadState  bool   // the store handed a state back: take it out at sync
}

// noteStale records that the inherited socket en was closed for good.
func (f *fdStore) noteStale(en wire.Entry) {
	if !storable(en.Network) {
		return
	}
	f.mu.Lock()
	f.stale = append(f.stale, en.Name)
	f.mu.Unlock()
}

// takeStale returns the names noted stale and forgets them.
func (f *fdStore) takeStale() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stale
	f.stale = nil
	return s
}

// storable reports whether sockets of network go in the fd store.
func storable(network string) bool {
	return strings.HasPrefix(network, "tcp") || strings.HasPrefix(network, "udp")
}

// storedState is the state the fd store handed back and whether there
// was one; its memfd is read and closed at the first call.
func (u *Upgrader) storedState() ([]byte, bool) {
	u.fds.stateOnce.Do(func() {
		f := u.inh.StoredState()
		if f == nil {
			return
		}
		u.fds.state = readState(handoff.Item{Kind: itemState, Files: []*os.File{f}}, u.log.Warn)
		u.fds.hadState = true
	})
	return u.fds.state, u.fds.hadState
}

// fdStoreReady is Ready's part: the stored state is read (its fd
// closed), and the store brought in step now, or, in a generation whose
// parent is still the main process, once the parent closed the hand-off
// channel (take calls fdStoreSync).
func (u *Upgrader) fdStoreReady() {
	u.storedState()
	if u.inh.HasParent() && u.in != nil {
		return
	}
	u.fdStoreSync()
}

// fdStoreOn reports whether this generation speaks to the fd store.
func (u *Upgrader) fdStoreOn() bool { return u.sd.enabled() && !u.opts.DisableFDStore }

// fdStoreSync brings the store in step with the registry (see the top of
// this file), if a service manager listens and this generation still
// serves. It never waits.
func (u *Upgrader) fdStoreSync() {
	if !u.fdStoreOn() {
		return
	}
	u.mu.Lock()
	if u.state != serving && u.state != upgrading {
		u.mu.Unlock()
		return
	}
	var fresh []*socket
	live := map[string]bool{}
	for _, s := range u.liveSocketsLocked() {
		live[s.name] = true
		if !s.inherited && storable(s.network) {
			fresh = append(fresh, s)
		}
	}
	u.mu.Unlock()
	var removed, stored []string
	if _, had := u.storedState(); had && u.fdStoreSend("remove", wire.StateFDName, nil) {
		removed = append(removed, wire.StateFDName)
	}
	for _, name := range u.fds.takeStale() {
		if !live[name] && u.fdStoreSend("remove", name, nil) {
			removed = append(removed, name)
		}
	}
	for _, s := range fresh {
		if u.fdStoreSend("store", s.name, s) {
			stored = append(stored, s.name)
		}
	}
	if len(removed)+len(stored) > 0 {
		u.log.Info("fd store", "store", stored, "remove", removed) // sent: kept only under FileDescriptorStoreMax=
	}
}

// fdStoreSend stores s's fd under name's FDNAME, or with s nil removes
// what the store holds under it; it logs why not and reports success.
func (u *Upgrader) fdStoreSend(what, name string, s *socket) bool {
	fdName, err := sdnotify.FDName(name)
	if err == nil && fdName == wire.StateFDName && s != nil {
		err = fmt.Errorf("%q is the name of the state in the fd store", name)
	}
	if err == nil && s == nil {
		err = u.sd.sender.Remove(fdName)
	}
	if err == nil && s != nil {
		err = controlFD(s.raw, func(fd int) error { return u.sd.sender.Store(fdName, fd) })
	}
	if err != nil {
		u.log.Warn("fd store: "+what+" failed", "listener", name, "err", err)
		return false
	}
	return true
}

// controlFD runs f on c's fd, which stays c's (Control, not File).
func controlFD(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// fdStoreState stores this generation's state as it stops serving (its
// drain is over), if a service manager listens and [Options.State] is
// set, and waits until the manager has read it (the process may exit at
// once: the manager drops a message from a process that is gone).
func (u *Upgrader) fdStoreState() {
	if !u.fdStoreOn() || u.opts.State == nil {
		return
	}
	b := u.opts.State()
	if len(b) > MaxState {
		u.log.Warn("fd store: state not stored", "err", fmt.Errorf("%d bytes, more than MaxState (%d)", len(b), MaxState))
		return
	}
	f, err := memFile(wire.StateFDName, b)
	if err != nil {
		u.log.Warn("fd store: state not stored", "err", err)
		return
	}
	defer f.Close()
	sender := u.sd.sender
	err = sender.Remove(wire.StateFDName) // one state at most: the one read at Ready is gone already
	if err == nil {
		err = sender.Store(wire.StateFDName, int(f.Fd()))
	}
	if err == nil {
		err = sender.Barrier(sdBarrierWait)
	}
	if err != nil {
		u.log.Warn("fd store: state may not be stored", "bytes", len(b), "err", err)
		return
	}
	u.log.Info("fd store: state stored", "bytes", len(b))
}
