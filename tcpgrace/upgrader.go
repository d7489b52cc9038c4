package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/bind"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/pidfile"
	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/takeover"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Upgrader is one generation of a service: it owns the registry of named
// sockets, hands them to the next generation on [Upgrader.Upgrade], and
// tells its own parent (if any) when it is ready. Its methods are safe for
// concurrent use.
type Upgrader struct {
	opts       Options
	log        *slog.Logger
	inh        *wire.Files
	sd         *sdNotifier    // the service manager, if any (sd_notify)
	ctl        *controlServer // the control socket, if any
	events     event.Stream   // the lifecycle's events (events.go)
	executable string
	args       []string
	started    time.Time                  // when New made this Upgrader
	totals     *tally                     // the service's counts (totals.go)
	mail       *mailbox                   // the service's mailbox (mail.go); nil if none
	in         *inChannel                 // the channel from the previous generation (adopt.go); nil if none
	out        atomic.Pointer[outChannel] // the channel to the next one, once an upgrade stood (handoff.go)
	tickets    tickets                    // the TLS session-ticket keys (tickets.go)
	taken      *takeover.Taken            // a takeover's connection to the old generation (takeover.go); nil if none
	counters   counters                   // added with AddCounter (counters.go)
	fds        fdStore                    // what this generation does with systemd's fd store (fdstore.go)

	// closing is held shared by each close of a registered socket that
	// this package makes (a listener's Close, closeRaw), and exclusively
	// while a next generation starts with those sockets' own fds (see
	// handed.pin), so that none of those fd numbers can name another
	// file by then.
	closing sync.RWMutex

	pidHeld atomic.Pointer[pidfile.Held] // the PID file this generation wrote, kept open until Shutdown or Close

	mu            sync.Mutex
	state         state // see lifecycle.go
	sockets       map[string]*socket
	conns         connSet
	claims        map[string]*adoptListener // listener name -> the server that takes its connections handed over
	cancelUpgrade context.CancelFunc
	upgradeDone   chan struct{} // closed when the running Upgrade returns
	connsDone     chan struct{} // closed when the last tracked conn closes during shutdown
	accepted      uint64        // connections accepted through registry listeners
	forceClosed   uint64        // connections closed at a drain deadline
	moved         uint64        // connections handed to the next generation
	leaveWhy      leaveReason   // why a Server loop ended, if one did
	// drainCtx is the context of this generation's drain once it began:
	// its end is the drain deadline. cutLate counts the tracked
	// connections that closed after it, by whoever's hand (Shutdown's,
	// or a server's own Close at the deadline under Run and RunHTTP).
	drainCtx context.Context
	cutLate  int
	reports  *reporter // a handed-off generation's drain reports, once begun
	// handedClosed is closed once the fds of the listeners a successful
	// Upgrade stopped are closed (see endUpgrade); nil before.
	handedClosed chan struct{}

	exitOnce sync.Once
	exit     chan struct{}
}

// New returns the Upgrader of this process. It takes the sockets this
// process inherited from its parent generation or from systemd, and
// removes the variables that named them from the environment. New may be
// called once per process; a second call fails.
//
// New registers no signal handler and starts no goroutine. If the
// environment names sockets that fail their checks, New returns the error,
// and the parent's upgrade fails with the same reason.
func New(opts Options) (*Upgrader, error) {
	files, err := wire.Take()
	if err != nil {
		return nil, err
	}
	files, taken, cold, err := takeOver(opts, files)
	if err != nil {
		return nil, err
	}
	u, err := newUpgrader(opts, files)
	if err != nil {
		if taken != nil {
			taken.Close()
		}
		return nil, err
	}
	u.taken = taken
	if cold != nil {
		u.log.Info("takeover: nobody serves there; started cold", "path", opts.Takeover, "err", cold)
	}
	return u, nil
}

// newUpgrader builds an Upgrader over given inherited files.
func newUpgrader(opts Options, files *wire.Files) (*Upgrader, error) {
	u := &Upgrader{
		opts:       opts,
		log:        opts.Logger,
		inh:        files,
		sd:         takeNotify(),
		executable: opts.Executable,
		args:       opts.Args,
		sockets:    make(map[string]*socket, files.Count()),
		claims:     map[string]*adoptListener{},
		exit:       make(chan struct{}),
		started:    time.Now(),
	}
	u.totals = newTally(files.Tally(), u.started)
	u.mail = openMailbox(files, u.log)
	if u.log == nil {
		u.log = slog.New(warnings{slog.Default().Handler()})
	}
	u.log = u.log.With("pid", os.Getpid(), "generation", files.Generation())
	u.openInChannel(files.Handoff())
	u.sdCheckEnv()
	if err := u.setUp(); err != nil {
		u.mail.close() // the channels' fds: a failed New holds none
		u.in.close()
		return nil, err
	}
	u.subscribe()
	return u, nil
}

// setUp is the part of New that may fail: the executable, the next
// generation's arguments, the control socket.
func (u *Upgrader) setUp() error {
	if u.executable == "" {
		exe, err := proc.Executable(os.Args)
		if err != nil {
			return fmt.Errorf("tcpgrace: finding own executable (set Options.Executable): %w", err)
		}
		u.executable = exe
	}
	if u.args == nil {
		u.args = append([]string(nil), os.Args...)
		if len(u.args) > 0 && strings.Contains(u.args[0], "/") && !filepath.IsAbs(u.args[0]) {
			u.args[0] = u.executable // the next generation may start in another directory
		}
	}
	return u.listenControl()
}

// Generation is 1 for a process started cold (or by systemd) and one more
// than its parent's for a process started by Upgrade.
func (u *Upgrader) Generation() int { return u.inh.Generation() }

// Exit returns a channel that is closed when this generation should go
// away: after a successful Upgrade (the next generation serves; this one's
// listeners no longer accept) or after Shutdown or Close. It never
// blocks.
func (u *Upgrader) Exit() <-chan struct{} { return u.exit }

func (u *Upgrader) closeExit() { u.exitOnce.Do(func() { close(u.exit) }) }

// Ready declares this generation serving. Call it once every socket it
// needs is registered. Accept connections only after it returned nil: a
// next generation whose parent rolls back is killed, and connections it
// accepted would be reset.
//
// Ready writes the PID file, if configured. It then tells the parent
// generation, if any, to stop accepting and drain. Last it closes the
// inherited sockets nobody claimed, so that a listener this version no
// longer asks for is released. The Unix socket file of such a listener is
// removed if a generation of this service created it and the path still
// leads to it. Ready does not block beyond those writes.
//
// In a child, a PID file that cannot be written is an error: Ready
// reports it to the parent and returns it. The parent's Upgrade then
// fails and kills this process, and the old generation keeps serving.
// A first generation serves all the same, because nobody else does; its
// error wraps [ErrReadyIncomplete]. So does an error after the parent was
// told, such as an inherited socket that would not close. Such an error
// is for the log: exiting would leave nobody serving.
//
// A parent that has vanished meanwhile is not an error: this process then
// serves alone. A second call returns [ErrAlreadyReady].
//
// Ready starts the goroutines an Upgrader keeps: one reads the reports
// of older generations that drain (see [Totals]); in a generation started
// by Upgrade, one takes what the parent hands over (connections, its
// state: see [Upgrader.Inherited]) until the parent closes its end.
// Shutdown and Close stop them.
func (u *Upgrader) Ready() error {
	u.mu.Lock()
	err := u.checkLocked(opReady)
	if err == nil {
		u.mustMoveLocked(readying)
	}
	u.mu.Unlock()
	if err != nil {
		return err
	}
	if err := u.tellReady(); err != nil {
		u.log.Error("ready failed", "err", err)
		return err
	}
	return nil
}

// tellReady is Ready's work once the state is readying.
func (u *Upgrader) tellReady() error {
	hasParent := u.inh.HasParent()
	if err := u.writePIDFile(); err != nil && hasParent {
		u.inh.Fail(err)
		return err
	} else if err != nil {
		u.serve()
		u.fdStoreReady()
		u.mail.read(u)
		return wrap(ErrReadyIncomplete, err)
	}
	if err := u.inh.Ready(); err != nil && !errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("tcpgrace: telling the parent generation we are ready: %w", err)
	}
	if err := u.awaitGiver(); err != nil {
		return err
	}
	if u.in != nil {
		go u.take() // says hello at once: the parent, which now reads it, learns that we take hand-offs
	}
	u.serve()
	err := u.closeUnclaimed()
	u.fdStoreReady() // after closeUnclaimed: what it closed comes out of the store
	u.mail.read(u)
	if err != nil {
		return wrap(ErrReadyIncomplete, err)
	}
	return nil
}

// writePIDFile writes the PID file, if one is configured.
func (u *Upgrader) writePIDFile() error {
	if u.opts.PIDFile == "" {
		return nil
	}
	h, err := pidfile.WriteHeld(u.opts.PIDFile, os.Getpid())
	if err != nil {
		return fmt.Errorf("tcpgrace: %w", err)
	}
	u.holdPIDFile(h)
	return nil
}

// holdPIDFile keeps h, the PID file just written, open (see
// pidfile.Held) and lets the one before go.
func (u *Upgrader) holdPIDFile(h *pidfile.Held) { u.pidHeld.Swap(h).Close() }

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
		u.fds.noteStale(en)
		removed := false
		if f, ok := u.inh.Owned(en.Name); ok && en.Network == "unix" {
			removed = (&bind.File{Path: en.Address, ID: f.FileID}).Remove()
		}
		u.log.Info("closed an inherited socket nobody asked for", "listener", en.Name, "network", en.Network,
			"addr", en.Address, "file_removed", removed)
	}
	return err
}

// serve moves readying -> serving and says so on the event stream: the
// service manager is told, the control socket answers.
func (u *Upgrader) serve() {
	u.mu.Lock()
	moved := u.moveLocked(serving)
	u.mu.Unlock()
	if moved {
		u.emit(event.Event{Kind: event.Ready, HasParent: u.inh.HasParent()})
	}
}

// Fail tells the parent generation that this one will not become ready,
// and why: the parent's Upgrade returns an error that carries reason, and
// the parent keeps serving. Call it when start-up fails, then exit. Without
// a parent it does nothing.
func (u *Upgrader) Fail(reason error) error {
	u.log.Error("start-up failed", "err", reason)
	return u.inh.Fail(reason)
}
