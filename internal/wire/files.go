package wire

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tcpgrace/tcpgrace/internal/errjoin"
	"github.com/tcpgrace/tcpgrace/internal/spread"
)

// Readiness protocol on the pipe whose write end the child inherits as
// Env.ReadyFD. The child either writes FailByte and its reason and closes
// its end, or writes ReadyByte, keeps its end open while it serves, and
// writes LeavingByte and closes it when it leaves on purpose. Its exit
// closes the end too, so the parent can tell a crash of the serving
// generation (an exit after ReadyByte alone) from a generation that left.
const (
	// ReadyByte means: the child serves every socket it needs.
	ReadyByte = 'R'
	// FailByte, followed by up to MaxFailLen bytes of text, means: the
	// child will not become ready, and the text says why.
	FailByte = 'F'
	// LeavingByte, after ReadyByte, means: the child no longer is the
	// serving generation by its own choice (a next generation of its own
	// took over, or it began to shut down), so its exit, whatever its
	// status, is no crash.
	LeavingByte = 'L'
	// MaxFailLen bounds the failure text the parent reads.
	MaxFailLen = 4096
)

var takeOnce struct {
	sync.Mutex
	done bool
}

// Take is the one process-global of this package: it decodes the
// environment of this process (os.LookupEnv, os.Getpid, os.Getppid),
// removes [EnvFDs] and systemd's variables from it so that no process
// started later sees them, checks every inherited fd and makes it
// close-on-exec. It may be called once; a second call returns [ErrTaken].
//
// Unlike [Decode], Take honours [EnvFDs] in the process it was written
// for even after that process's parent died while starting it (killed,
// crashed): the value names the readiness pipe's inode, and a process
// whose ready fd is that pipe, with nobody left reading it, is the one
// the dead parent started; it takes the sockets and serves alone (its
// [Files.Ready] then finds no reader, which is not an error). A stale copy
// of the value in a grandchild is still ignored; see [EnvFDs].
//
// A first start returns an empty, usable *Files and no error. If the
// inherited value is malformed or an fd fails its check, Take returns the
// error and, when a readiness pipe was inherited, sends the error to the
// parent over it so the parent's upgrade fails with the same reason. Take
// closes no fd on error: the values might name fds that are not ours.
func Take() (*Files, error) {
	takeOnce.Lock()
	defer takeOnce.Unlock()
	if takeOnce.done {
		return nil, ErrTaken
	}
	takeOnce.done = true
	env, err := decode(os.LookupEnv, os.Getpid(), os.Getppid(), probePipe)
	raw, _ := os.LookupEnv(EnvFDs)
	for _, k := range []string{EnvFDs, EnvListenPID, EnvListenFDs, EnvListenFDNames} {
		os.Unsetenv(k)
	}
	if err != nil {
		reportMalformed(raw, os.Getppid(), err)
		return nil, err
	}
	return open(env, true)
}

// reportMalformed sends a decoding error to the parent when the malformed
// value still names our parent's pid and a readiness pipe that checks out:
// the parent's upgrade then fails with the reason, not a bare exit.
func reportMalformed(raw string, ppid int, reason error) {
	pid, ready := -1, -1
	for _, f := range strings.Split(raw, ";") {
		if v, ok := strings.CutPrefix(f, "pid="); ok {
			pid, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(f, "ready="); ok {
			ready, _ = parseFD(v)
		}
	}
	if pid != ppid || ready < ListenFDsStart {
		return
	}
	if _, err := checkPipe(ready); err != nil {
		return
	}
	f := &Files{ready: os.NewFile(uintptr(ready), "tcpgrace-ready"), env: Env{ReadyFD: ready}}
	f.Fail(reason)
}

// Files holds the sockets a process inherited until they are claimed by
// name. Its methods are safe for concurrent use.
type Files struct {
	mu        sync.Mutex
	env       Env
	claimed   []bool
	socks     []socket    // each entry's, made by Open
	ready     *os.File    // nil once closed
	readySent bool        // ReadyByte was written; ready stays open until Leave
	mail      [2]*os.File // the mailbox's ends until Mail hands them out
	handoff   *os.File    // the hand-off channel's end until Handoff hands it out
	tickets   []TicketKey // the TLS session-ticket keys handed over
	stored    *os.File    // the state systemd's fd store handed back, until StoredState (systemd.go)
}

// Open checks the fds that env names and takes ownership of them. It does
// not read or change the environment; [Take] is the usual way in. A nil env
// gives an empty *Files, as on a first start.
func Open(env *Env) (*Files, error) { return open(env, false) }

// open is Open; decoded says that env was just decoded (checked, if it
// is TCPGRACE_FDS's) and is used nowhere else, so that it is taken as it
// is, not copied.
func open(env *Env, decoded bool) (*Files, error) {
	f := &Files{env: Env{Generation: 1, ReadyFD: -1}}
	if env == nil {
		return f, nil
	}
	if decoded {
		f.env = *env
	} else {
		f.env = env.clone()
	}
	// A hand-built env, and systemd's, get the checks that decoding
	// TCPGRACE_FDS makes: two *os.File on one fd would close an fd that
	// is not ours.
	if !decoded || f.env.Source != EnvFDs {
		if err := f.env.checkFDs(); err != nil {
			return nil, err
		}
	}
	f.stored = f.env.splitStoredState() // a memfd, not a socket
	if env.ReadyFD >= 0 {
		if err := checkReadyPipe(env); err != nil {
			return nil, err
		}
		f.ready = os.NewFile(uintptr(env.ReadyFD), "tcpgrace-ready")
	}
	// The sockets are checked and made first, with every fd inherited
	// left open: if one fails, Open fails having closed nothing of
	// env's. Only once every one is made are they ours to close.
	if err := f.makeSockets(); err != nil {
		return nil, err
	}
	for _, open := range []func(*Env) error{f.openMail, f.openHandoff, f.openTickets} {
		if err := open(env); err != nil {
			f.closeSockets()
			return nil, err
		}
	}
	fds := make([]int, len(f.env.Entries))
	for i, en := range f.env.Entries {
		fds[i] = en.FD
	}
	closeInherited(fds)
	return f, nil
}

// socketsEach is the fewest sockets a goroutine of Open checks and makes:
// below two goroutines' worth Open does it all on the caller's.
const socketsEach = 16

// socket is an inherited socket, made a listener (stream) or a packet
// conn (datagram) by Open: both nil once claimed or closed.
type socket struct {
	ln net.Listener
	pc net.PacketConn
}

func (s socket) close() error {
	switch {
	case s.ln != nil:
		return s.ln.Close()
	case s.pc != nil:
		return s.pc.Close()
	}
	return nil
}

// network is the network of the socket as net made it: tcp4, tcp6,
// udp4, udp6, unix, unixpacket or unixgram.
func (s socket) network() string {
	var addr net.Addr
	switch {
	case s.ln != nil:
		addr = s.ln.Addr()
	case s.pc != nil:
		addr = s.pc.LocalAddr()
	}
	switch a := addr.(type) {
	case *net.TCPAddr:
		return pick(len(a.IP) == net.IPv4len, "tcp4", "tcp6") // net keeps AF_INET's 4 bytes
	case *net.UDPAddr:
		return pick(len(a.IP) == net.IPv4len, "udp4", "udp6")
	case *net.UnixAddr:
		return a.Net
	}
	return ""
}

// makeSockets checks each entry's fd and makes it a listener or packet
// conn, spread over the CPUs: an inherited socket costs some ten system
// calls before its generation is ready (its check, net's duplicate and
// net's own checks, the poller's registration), and the parent is idle
// meanwhile. The fds inherited stay open. If one fails, the start fails,
// and every socket made is closed.
func (f *Files) makeSockets() error {
	n := len(f.env.Entries)
	f.socks = make([]socket, n)
	f.claimed = make([]bool, n)
	errs := make([]error, n)
	makers := make([]maker, spread.Workers(n, socketsEach))
	spread.Do(n, socketsEach, func(w, i int) {
		f.socks[i], errs[i] = makeSocket(&makers[w], &f.env.Entries[i], f.env.Source == EnvListenFDs)
	})
	for i := range makers {
		makers[i].close()
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		f.closeSockets()
		en := f.env.Entries[i]
		derr := &DecodeError{Var: f.env.Source, Entry: i, Err: ErrBadFD,
			Reason: fmt.Sprintf("name %q fd %d: %v", en.Name, en.FD, err)}
		f.Fail(derr)
		return derr
	}
	return nil
}

// makeSocket checks en's fd and makes a listener or packet conn of it
// with m; with fill set (systemd) it sets en.Network and en.Address from
// the socket. A socket that passes quickCheck is made at once and its
// address family checked on what net made; any other fd gets
// checkSocket's full check, whose error says what the fd is.
func makeSocket(m *maker, en *Entry, fill bool) (socket, error) {
	if fill || !quickCheck(*en) {
		if err := checkSocket(en, fill); err != nil {
			return socket{}, err
		}
	}
	s, err := m.make(*en)
	if have := s.network(); err == nil && !sameFamily(have, en.Network) {
		s.close() // net's duplicate: the fd inherited stays open
		s, err = socket{}, fmt.Errorf("is a %s socket, the entry says %s", have, en.Network)
	}
	if err != nil {
		if cerr := checkSocket(en, fill); cerr != nil {
			return socket{}, cerr // what the fd is, in checkSocket's words
		}
		return socket{}, err
	}
	return s, nil
}

// pick is a if first, else b.
func pick(first bool, a, b string) string {
	if first {
		return a
	}
	return b
}

// closeSockets closes every socket made.
func (f *Files) closeSockets() {
	for i, s := range f.socks {
		s.close()
		f.socks[i] = socket{}
	}
}

// fileSocket makes the socket of file a listener or packet conn, by
// network. net keeps a duplicate of file's fd.
func fileSocket(file *os.File, network string) (socket, error) {
	if strings.HasPrefix(network, "udp") {
		pc, err := net.FilePacketConn(file)
		return socket{pc: pc}, err
	}
	ln, err := net.FileListener(file)
	return socket{ln: ln}, err
}

// clone is a deep copy of e.
func (e *Env) clone() Env {
	c := *e
	c.Entries = append([]Entry(nil), e.Entries...)
	c.Older = append([]int(nil), e.Older...)
	c.Keep = append([]string(nil), e.Keep...)
	c.Owned = append([]UnixFile(nil), e.Owned...)
	if e.Tally != nil {
		t := *e.Tally
		t.Handoffs = append([]uint64(nil), e.Tally.Handoffs...)
		c.Tally = &t
	}
	return c
}

// openMail checks the mailbox's fds, if env names them, and keeps them.
func (f *Files) openMail(env *Env) error {
	if !env.HasMail() {
		return nil
	}
	for i, fd := range env.Mail {
		if err := checkMail(fd); err != nil {
			derr := &DecodeError{Var: env.Source, Entry: -1, Err: ErrBadFD,
				Reason: fmt.Sprintf("mailbox fd %d: %v", fd, err)}
			f.Fail(derr)
			return derr
		}
		f.mail[i] = os.NewFile(uintptr(fd), fmt.Sprintf("tcpgrace-mail-%d", i))
	}
	return nil
}

// Mail hands out the mailbox's in and out ends, once: nil, nil if none
// was inherited or they were handed out before.
func (f *Files) Mail() (in, out *os.File) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, out = f.mail[0], f.mail[1]
	f.mail = [2]*os.File{}
	return in, out
}

// openHandoff checks the hand-off channel's fd, if env names it, and
// keeps it.
func (f *Files) openHandoff(env *Env) error {
	if !env.HasHandoff() {
		return nil
	}
	if err := checkHandoff(env.Handoff); err != nil {
		derr := &DecodeError{Var: env.Source, Entry: -1, Err: ErrBadFD,
			Reason: fmt.Sprintf("hand-off fd %d: %v", env.Handoff, err)}
		f.Fail(derr)
		return derr
	}
	f.handoff = os.NewFile(uintptr(env.Handoff), "tcpgrace-handoff")
	return nil
}

// Handoff hands out this process's end of the hand-off channel, once:
// nil if none was inherited or it was handed out before.
func (f *Files) Handoff() *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.handoff
	f.handoff = nil
	return h
}

// Tally returns the counts the previous generation handed over, nil if
// none.
func (f *Files) Tally() *Tally { return f.env.Tally }

// checkReadyPipe checks that env's ready fd is a pipe, the one the value
// names by its inode (if it names one).
func checkReadyPipe(env *Env) error {
	ino, err := checkPipe(env.ReadyFD)
	if err == nil && env.Pipe != 0 && ino != env.Pipe {
		err = fmt.Errorf("pipe inode %d, the value names %d", ino, env.Pipe)
	}
	if err != nil {
		return &DecodeError{Var: env.Source, Entry: -1, Err: ErrBadFD,
			Reason: fmt.Sprintf("ready fd %d: %v", env.ReadyFD, err)}
	}
	return nil
}

// Generation is the generation of this process: 1 on a first start (or a
// socket-activated one), the parent's plus one after an upgrade.
func (f *Files) Generation() int { return f.env.Generation }

// Foreign reports whether the file of the inherited Unix socket called
// name belongs to someone else, so that no generation may remove it: every
// socket systemd passed, and those the parent listed in keep.
func (f *Files) Foreign(name string) bool {
	return f.env.Source == EnvListenFDs || slices.Contains(f.env.Keep, name)
}

// Owned returns the file of the inherited Unix socket called name as the
// generation that created it recorded it (device and inode), and whether
// the chain created it at all. A file that is not owned (systemd's, or
// one the hand-off says nothing about) must never be removed.
func (f *Files) Owned(name string) (UnixFile, bool) {
	if f.env.Source != EnvFDs {
		return UnixFile{}, false
	}
	i := slices.IndexFunc(f.env.Owned, func(u UnixFile) bool { return u.Name == name })
	if i < 0 {
		return UnixFile{}, false
	}
	return f.env.Owned[i], true
}

// Older lists the pids of the older generations that may still be
// draining: the parent and the ones it listed. Empty on a first start.
func (f *Files) Older() []int {
	if f.env.Source != EnvFDs {
		return nil
	}
	pids := []int{f.env.Writer}
	for _, pid := range f.env.Older {
		if !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// HasParent reports whether this process was started by a tcpgrace
// parent (which waits, or waited, for its readiness). It does not change
// when Ready or Fail is sent.
func (f *Files) HasParent() bool { return f.env.Source == EnvFDs && f.env.ReadyFD >= 0 }

// Source is the variable the sockets came from ([EnvFDs] or
// [EnvListenFDs]), or "" on a first start.
func (f *Files) Source() string { return f.env.Source }

// Count is the number of sockets inherited, claimed or not.
func (f *Files) Count() int { return len(f.env.Entries) }

// Unclaimed lists the inherited entries nobody has claimed yet.
func (f *Files) Unclaimed() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	for i, en := range f.env.Entries {
		if !f.claimed[i] && f.socks[i] != (socket{}) {
			out = append(out, en)
		}
	}
	return out
}

// Listener returns the inherited stream socket called name as a listener,
// or (nil, nil) if none was inherited. The caller owns the listener.
//
// An inherited name must be asked for with the network and address it was
// registered with; anything else is an error that names both. Sockets from
// systemd are matched by name, then by address, and their address is
// systemd's to decide.
func (f *Files) Listener(name, network, address string) (net.Listener, error) {
	s, fd, err := f.claim(name, network, address)
	if err != nil || s == (socket{}) {
		return nil, err
	}
	if s.ln == nil {
		s.close()
		return nil, fmt.Errorf("inherit: %s %q (fd %d): a packet socket, not a listener", network, name, fd)
	}
	return s.ln, nil
}

// PacketConn is [Files.Listener] for packet sockets (udp).
func (f *Files) PacketConn(name, network, address string) (net.PacketConn, error) {
	s, fd, err := f.claim(name, network, address)
	if err != nil || s == (socket{}) {
		return nil, err
	}
	if s.pc == nil {
		s.close()
		return nil, fmt.Errorf("inherit: %s %q (fd %d): a stream socket, not a packet socket", network, name, fd)
	}
	return s.pc, nil
}

// claim takes the entry for the request out of f: its socket and its fd
// as inherited, or nothing.
func (f *Files) claim(name, network, address string) (socket, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.socks == nil {
		return socket{}, 0, nil
	}
	i, err := f.find(name, network, address)
	if i < 0 || err != nil {
		return socket{}, 0, err
	}
	f.claimed[i] = true
	s := f.socks[i]
	f.socks[i] = socket{}
	return s, f.env.Entries[i].FD, nil
}

// find returns the index of the unclaimed entry for the request, or -1.
func (f *Files) find(name, network, address string) (int, error) {
	if f.env.Source == EnvListenFDs {
		return f.findSystemd(name, network, address), nil
	}
	i, ok := f.env.names[name]
	if !ok || f.socks[i] == (socket{}) {
		return -1, nil
	}
	if en := f.env.Entries[i]; en.Network != network || en.Address != address {
		return -1, fmt.Errorf("%w: %q was inherited as %s %s, asked for as %s %s",
			ErrMismatch, name, en.Network, en.Address, network, address)
	}
	return i, nil
}

// findSystemd is find for sockets from systemd: by name and family, then
// by family and address, as their names may repeat or be empty.
func (f *Files) findSystemd(name, network, address string) int {
	for i, en := range f.env.Entries {
		// Unnamed systemd sockets are matched by address only.
		if f.socks[i] != (socket{}) && en.Name == name && en.Name != "" && sameFamily(en.Network, network) {
			return i
		}
	}
	for i, en := range f.env.Entries {
		if f.socks[i] != (socket{}) && sameFamily(en.Network, network) && sameAddr(en, network, address) {
			return i
		}
	}
	return -1
}

// CloseUnclaimed closes every inherited socket nobody claimed, so that a
// socket the new generation no longer serves is released once the old
// generation exits. It returns every close error.
func (f *Files) CloseUnclaimed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for i, s := range f.socks {
		if s == (socket{}) {
			continue
		}
		f.socks[i] = socket{}
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("inherit: closing unclaimed %q: %w", f.env.Entries[i].Name, err))
		}
	}
	return errjoin.Join(errs...)
}

// Ready tells the parent that this process serves. The pipe stays open
// (close-on-exec) until [Files.Leave], so that the parent can tell this
// generation's crash from its leaving on purpose. Without a parent it does
// nothing. A second call, or one after Fail, returns an error; so does a
// parent that no longer reads (the error then wraps syscall.EPIPE, and
// the pipe is closed).
func (f *Files) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready == nil || f.readySent {
		return f.sentErrLocked()
	}
	f.readySent = true
	if _, err := f.ready.Write([]byte{ReadyByte}); err != nil {
		f.ready.Close()
		f.ready = nil
		return fmt.Errorf("inherit: writing to readiness pipe (fd %d): %w", f.env.ReadyFD, err)
	}
	return nil
}

// Leave tells the parent, after Ready, that this generation leaves on
// purpose (it handed over to a next generation of its own, or it is
// shutting down), and closes the pipe: its exit, whatever the status, is
// then no crash for the parent to roll back from. Before Ready, without a
// parent, and a second time it does nothing and returns nil. A parent
// that no longer reads makes it return an error wrapping syscall.EPIPE.
func (f *Files) Leave() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready == nil || !f.readySent {
		return nil
	}
	_, err := f.ready.Write([]byte{LeavingByte})
	cerr := f.ready.Close()
	f.ready = nil
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("inherit: writing to readiness pipe (fd %d): %w", f.env.ReadyFD, err)
	}
	return nil
}

// Watched reports whether this generation's parent still watches it: Ready
// was sent, Leave was not, and the parent still holds the readiness pipe's
// read end. A parent does so within its ready grace (the library's
// Options.ReadyGrace) and closes it when the grace ends, when it dies, or
// at once without a grace. It returns the parent's pid.
func (f *Files) Watched() (parent int, watched bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready == nil || !f.readySent {
		return 0, false
	}
	rc, err := f.ready.SyscallConn()
	if err != nil {
		return 0, false
	}
	gone := true
	if err := rc.Control(func(fd uintptr) { gone = readerGone(int(fd)) }); err != nil {
		return 0, false
	}
	return f.env.Writer, !gone
}

// Fail tells the parent that this process will not become ready, and why;
// the parent's upgrade error carries the text. Without a parent it does
// nothing. After Ready it returns an error.
func (f *Files) Fail(reason error) error {
	msg := "unknown reason"
	if reason != nil {
		msg = reason.Error()
	}
	if len(msg) > MaxFailLen {
		msg = msg[:MaxFailLen]
	}
	return f.send(append([]byte{FailByte}, msg...))
}

var errSent = errors.New("inherit: readiness already sent")

// sentErrLocked is what sending a second word returns: errSent, or nil
// without a parent. f.mu must be held.
func (f *Files) sentErrLocked() error {
	if f.env.ReadyFD >= 0 {
		return errSent
	}
	return nil
}

// send writes msg and closes the pipe.
func (f *Files) send(msg []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready == nil || f.readySent {
		return f.sentErrLocked()
	}
	_, err := f.ready.Write(msg)
	cerr := f.ready.Close()
	f.ready = nil
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("inherit: writing to readiness pipe (fd %d): %w", f.env.ReadyFD, err)
	}
	return nil
}
