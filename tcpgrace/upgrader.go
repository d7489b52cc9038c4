package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/tcpgrace/tcpgrace/inherit"
)

// state is the lifecycle of one generation.
type state int

const (
	stateServing   state = iota // owns its sockets, may upgrade
	stateUpgrading              // a child is starting
	stateUpgraded               // a child took over; this one drains
	stateClosed                 // Shutdown or Close was called
)

// Upgrader is one generation of a service: it owns the registry of named
// sockets, hands them to the next generation on [Upgrader.Upgrade], and
// tells its own parent (if any) when it is ready. Its methods are safe for
// concurrent use.
type Upgrader struct {
	opts       Options
	log        *slog.Logger
	inh        *inherit.Files
	sd         *sdNotifier    // the service manager, if any (sd_notify)
	ctl        *controlServer // the control socket, if any
	executable string
	args       []string

	mu            sync.Mutex
	state         state
	readying      bool // Ready was called
	ready         bool // Ready told the parent (if any): this generation serves
	handedOff     bool // a next generation took over the sockets
	sockets       map[string]*socket
	conns         map[*trackedConn]struct{}
	cancelUpgrade context.CancelFunc
	upgradeDone   chan struct{} // closed when the running Upgrade returns
	connsDone     chan struct{} // closed when the last tracked conn closes during shutdown
	accepted      uint64        // connections accepted through registry listeners
	forceClosed   uint64        // connections closed at a drain deadline

	exitOnce sync.Once
	exit     chan struct{}
}

// New returns the Upgrader of this process. It takes the sockets this
// process inherited from its parent generation (or from systemd) through
// [inherit.Take], which reads and removes the variables from the
// environment: New may therefore be called once per process, and a second
// call fails with an error wrapping [inherit.ErrTaken].
//
// New registers no signal handler and starts no goroutine. If the
// environment names sockets that fail their checks, New returns the error
// and the parent's upgrade fails with the same reason.
func New(opts Options) (*Upgrader, error) {
	files, err := inherit.Take()
	if err != nil {
		return nil, fmt.Errorf("tcpgrace: inheriting sockets: %w", err)
	}
	return newUpgrader(opts, files)
}

// NewWithFiles is New over sockets the caller took itself, with
// [inherit.Take] (to look at them first) or [inherit.Open] (a cold start
// from inherit.Open(nil), as tests and benchmarks do, or a hand-built
// environment). The Upgrader owns files from then on.
func NewWithFiles(opts Options, files *inherit.Files) (*Upgrader, error) {
	if files == nil {
		return nil, errors.New("tcpgrace: NewWithFiles: nil files")
	}
	return newUpgrader(opts, files)
}

// newUpgrader builds an Upgrader over given inherited files.
func newUpgrader(opts Options, files *inherit.Files) (*Upgrader, error) {
	u := &Upgrader{
		opts:       opts,
		log:        opts.Logger,
		inh:        files,
		sd:         takeNotify(),
		executable: opts.Executable,
		args:       opts.Args,
		sockets:    map[string]*socket{},
		conns:      map[*trackedConn]struct{}{},
		exit:       make(chan struct{}),
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.log = u.log.With("pid", os.Getpid(), "generation", files.Generation())
	if u.executable == "" {
		exe, err := startPath(os.Args)
		if err != nil {
			return nil, fmt.Errorf("tcpgrace: finding own executable (set Options.Executable): %w", err)
		}
		u.executable = exe
	}
	if u.args == nil {
		u.args = append([]string(nil), os.Args...)
		if len(u.args) > 0 && strings.Contains(u.args[0], "/") && !filepath.IsAbs(u.args[0]) {
			u.args[0] = u.executable // the next generation may start in another directory
		}
	}
	if err := u.listenControl(); err != nil {
		return nil, err
	}
	return u, nil
}

// startPath is the path this process was started from, as nginx re-execs
// its own argv[0]: argv[0] made absolute against the working directory
// now (New runs at start), or looked up in PATH when it has no slash. It
// is kept unresolved, so that a symlink ("current -> releases/v2") is
// followed anew at every upgrade. When argv[0] does not name the running
// program (a launcher that set it to something else), it is
// os.Executable(), which has symlinks resolved.
func startPath(args []string) (string, error) {
	var p string
	switch {
	case len(args) == 0 || args[0] == "":
	case strings.Contains(args[0], "/"):
		p, _ = filepath.Abs(args[0])
	default:
		if found, err := exec.LookPath(args[0]); err == nil {
			p, _ = filepath.Abs(found)
		}
	}
	self, err := os.Executable()
	if p != "" && sameFile(p, self) {
		return p, nil
	}
	return self, err
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// Generation is 1 for a process started cold (or by systemd) and one more
// than its parent's for a process started by Upgrade.
func (u *Upgrader) Generation() int { return u.inh.Generation() }

// HasParent reports whether this process was started by Upgrade: its
// parent waits (or waited) for Ready. It does not change when Ready or
// Fail is called, so a child whose Ready failed can tell that it must exit.
func (u *Upgrader) HasParent() bool { return u.inh.HasParent() }

// Exit returns a channel that is closed when this generation should go
// away: after a successful Upgrade (the next generation serves; this one's
// listeners are already closed) or after Shutdown or Close. It never
// blocks.
func (u *Upgrader) Exit() <-chan struct{} { return u.exit }

func (u *Upgrader) closeExit() { u.exitOnce.Do(func() { close(u.exit) }) }

// Ready declares this generation serving. Call it once every socket it
// needs is registered, and accept connections only after it returned nil:
// a next generation whose parent rolls back is killed, and connections it
// accepted would be reset. Ready writes the PID file (if configured),
// tells the parent generation (if any) to stop accepting and drain, and
// closes the inherited sockets nobody claimed: a listener this version no
// longer asks for is released, and its Unix socket file removed if a
// generation of this service created it and the path still leads to that
// file (a parent that then rolls back within [Options.ReadyGrace] keeps
// serving such a socket, without its file). It does not block beyond
// those writes.
//
// If the PID file cannot be written, Ready returns that error. In a child
// it also reports the error to the parent, whose Upgrade then fails and
// which kills this process: the old generation keeps serving, and this
// one must exit. A first generation counts as ready anyway (it serves
// alone and may upgrade later): its error wraps [ErrReadyIncomplete], as
// does an error after the parent was told (closing inherited sockets
// nobody claimed). Such an error is for the log: this generation serves,
// and exiting would leave nobody serving. A parent that has vanished
// meanwhile is not an error: this process then serves alone. A second
// call returns [ErrAlreadyReady].
func (u *Upgrader) Ready() error {
	u.mu.Lock()
	if u.readying {
		u.mu.Unlock()
		return ErrAlreadyReady
	}
	u.readying = true
	u.mu.Unlock()
	hasParent := u.inh.HasParent()
	if u.opts.PIDFile != "" {
		if err := writePIDFile(u.opts.PIDFile, os.Getpid()); err != nil {
			if hasParent {
				u.inh.Fail(err)
				return err
			}
			u.setReady()
			return fmt.Errorf("%w: %w", ErrReadyIncomplete, err)
		}
	}
	if err := u.inh.Ready(); err != nil && !errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("tcpgrace: telling the parent we are ready: %w", err)
	}
	u.setReady()
	u.log.Info("ready", "parent", hasParent)
	if err := u.closeUnclaimed(); err != nil {
		return fmt.Errorf("%w: %w", ErrReadyIncomplete, err)
	}
	return nil
}

// closeUnclaimed closes the inherited sockets nobody claimed and removes
// the files of the Unix sockets among them that the chain created, if the
// path still leads to the inode the socket was bound to. u.mu is held
// while they are closed, so that no Listen claims one meanwhile.
func (u *Upgrader) closeUnclaimed() error {
	u.mu.Lock()
	unclaimed := u.inh.Unclaimed()
	err := u.inh.CloseUnclaimed()
	u.mu.Unlock()
	for _, en := range unclaimed {
		removed := false
		if f, ok := u.inh.Owned(en.Name); ok && en.Network == "unix" {
			removed = (&unixPath{path: en.Address, dev: f.Dev, ino: f.Ino}).remove()
		}
		u.log.Info("closed an inherited socket nobody asked for", "listener", en.Name, "network", en.Network,
			"addr", en.Address, "file_removed", removed)
	}
	return err
}

func (u *Upgrader) setReady() {
	u.mu.Lock()
	u.ready = true
	u.mu.Unlock()
	u.sdReady(u.inh.HasParent())
	u.serveControl()
}

// Fail tells the parent generation that this one will not become ready,
// and why: the parent's Upgrade returns an error that carries reason, and
// the parent keeps serving. Call it when start-up fails, then exit. Without
// a parent it does nothing.
func (u *Upgrader) Fail(reason error) error {
	u.log.Error("start-up failed", "err", reason)
	return u.inh.Fail(reason)
}

// stateErrLocked explains why an operation that needs stateServing cannot
// run. u.mu must be held.
func (u *Upgrader) stateErrLocked() error {
	switch u.state {
	case stateUpgrading:
		return ErrUpgradeInProgress
	case stateUpgraded:
		return ErrUpgraded
	case stateClosed:
		return ErrClosed
	}
	return nil
}
