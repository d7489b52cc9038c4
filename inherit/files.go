package inherit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-multierror"
)

// Readiness protocol on the pipe whose write end the child inherits as
// Env.ReadyFD. The child writes exactly one message and closes its end.
const (
	// ReadyByte alone means: the child serves every socket it needs.
	ReadyByte = 'R'
	// FailByte, followed by up to MaxFailLen bytes of text, means: the
	// child will not become ready, and the text says why.
	FailByte = 'F'
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
	env, err := Decode(os.LookupEnv, os.Getpid(), os.Getppid())
	raw, _ := os.LookupEnv(EnvFDs)
	for _, k := range []string{EnvFDs, EnvListenPID, EnvListenFDs, EnvListenFDNames} {
		os.Unsetenv(k)
	}
	if err != nil {
		reportMalformed(raw, os.Getppid(), err)
		return nil, err
	}
	return Open(env)
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
	if pid != ppid || ready < ListenFDsStart || checkPipe(ready) != nil {
		return
	}
	f := &Files{ready: os.NewFile(uintptr(ready), "tcpgrace-ready"), env: Env{ReadyFD: ready}}
	f.Fail(reason)
}

// Files holds the sockets a process inherited until they are claimed by
// name. Its methods are safe for concurrent use.
type Files struct {
	mu      sync.Mutex
	env     Env
	claimed []bool
	files   []*os.File // nil once claimed or closed
	ready   *os.File
}

// Open checks the fds that env names and takes ownership of them. It does
// not read or change the environment; [Take] is the usual way in. A nil env
// gives an empty *Files, as on a first start.
func Open(env *Env) (*Files, error) {
	f := &Files{env: Env{Generation: 1, ReadyFD: -1}}
	if env == nil {
		return f, nil
	}
	// A hand-built env gets the checks Decode makes: two *os.File on one
	// fd would close an fd that is not ours.
	if err := env.checkFDs(); err != nil {
		return nil, err
	}
	f.env = *env
	f.env.Entries = append([]Entry(nil), env.Entries...)
	f.env.Older = append([]int(nil), env.Older...)
	f.env.Keep = append([]string(nil), env.Keep...)
	if env.ReadyFD >= 0 {
		if err := checkPipe(env.ReadyFD); err != nil {
			return nil, &DecodeError{Var: env.Source, Entry: -1, Err: ErrBadFD,
				Reason: fmt.Sprintf("ready fd %d: %v", env.ReadyFD, err)}
		}
		f.ready = os.NewFile(uintptr(env.ReadyFD), "tcpgrace-ready")
	}
	for i := range f.env.Entries {
		en := &f.env.Entries[i]
		if err := checkSocket(en, env.Source == EnvListenFDs); err != nil {
			derr := &DecodeError{Var: env.Source, Entry: i, Err: ErrBadFD,
				Reason: fmt.Sprintf("name %q fd %d: %v", en.Name, en.FD, err)}
			f.Fail(derr)
			return nil, derr
		}
	}
	// Only now, with every fd checked, do they become *os.File (whose
	// finalizer would close them).
	for _, en := range f.env.Entries {
		f.files = append(f.files, os.NewFile(uintptr(en.FD), fmt.Sprintf("fd %d", en.FD)))
	}
	f.claimed = make([]bool, len(f.files))
	return f, nil
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

// Unclaimed lists the inherited entries nobody has claimed yet.
func (f *Files) Unclaimed() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	for i, en := range f.env.Entries {
		if !f.claimed[i] && f.files[i] != nil {
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
	file, err := f.claim(name, network, address)
	if file == nil || err != nil {
		return nil, err
	}
	defer file.Close()
	ln, err := net.FileListener(file)
	if err != nil {
		return nil, fmt.Errorf("inherit: %s %q (%s): %w", network, name, file.Name(), err)
	}
	return ln, nil
}

// PacketConn is [Files.Listener] for packet sockets (udp).
func (f *Files) PacketConn(name, network, address string) (net.PacketConn, error) {
	file, err := f.claim(name, network, address)
	if file == nil || err != nil {
		return nil, err
	}
	defer file.Close()
	pc, err := net.FilePacketConn(file)
	if err != nil {
		return nil, fmt.Errorf("inherit: %s %q (%s): %w", network, name, file.Name(), err)
	}
	return pc, nil
}

func (f *Files) claim(name, network, address string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		return nil, nil
	}
	i, err := f.find(name, network, address)
	if i < 0 || err != nil {
		return nil, err
	}
	f.claimed[i] = true
	file := f.files[i]
	f.files[i] = nil
	return file, nil
}

// find returns the index of the unclaimed entry for the request, or -1.
func (f *Files) find(name, network, address string) (int, error) {
	systemd := f.env.Source == EnvListenFDs
	for i, en := range f.env.Entries {
		if f.files[i] == nil || en.Name != name || (systemd && en.Name == "") {
			continue // unnamed systemd sockets are matched by address only
		}
		if systemd {
			if sameFamily(en.Network, network) {
				return i, nil
			}
			continue
		}
		if en.Network != network || en.Address != address {
			return -1, fmt.Errorf("%w: %q was inherited as %s %s, asked for as %s %s",
				ErrMismatch, name, en.Network, en.Address, network, address)
		}
		return i, nil
	}
	if systemd {
		for i, en := range f.env.Entries {
			if f.files[i] != nil && sameFamily(en.Network, network) && sameAddr(en, network, address) {
				return i, nil
			}
		}
	}
	return -1, nil
}

// CloseUnclaimed closes every inherited socket nobody claimed, so that a
// socket the new generation no longer serves is released once the old
// generation exits. It returns every close error.
func (f *Files) CloseUnclaimed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs *multierror.Error
	for i, file := range f.files {
		if file == nil {
			continue
		}
		f.files[i] = nil
		if err := file.Close(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("inherit: closing unclaimed %q: %w", f.env.Entries[i].Name, err))
		}
	}
	return errs.ErrorOrNil()
}

// Ready tells the parent that this process serves, and closes the pipe.
// Without a parent it does nothing. A second call returns an error.
func (f *Files) Ready() error {
	return f.send([]byte{ReadyByte})
}

// Fail tells the parent that this process will not become ready, and why;
// the parent's upgrade error carries the text. Without a parent it does
// nothing.
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

func (f *Files) send(msg []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready == nil {
		if f.env.ReadyFD >= 0 {
			return errSent
		}
		return nil
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
