package tcpgrace

import (
	"io/fs"
	"log/slog"
	"time"
)

// Defaults for the zero values of [Options] and [Server].
const (
	// DefaultReadyTimeout is how long Upgrade waits for the next
	// generation to become ready.
	DefaultReadyTimeout = time.Minute
	// DefaultUnixMode is the permission of Unix socket files: only the
	// owner may connect.
	DefaultUnixMode fs.FileMode = 0o600
	// DefaultMaxGenerations bounds the generations alive at once: the
	// serving one plus up to three still draining.
	DefaultMaxGenerations = 4
	// DefaultDrainTimeout is how long [Server] waits for open connections
	// to finish once this generation stops serving.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultIdleGrace is how long a keep-alive connection may stay idle
	// while [Server.RunHTTP] drains before the draining generation closes
	// it.
	DefaultIdleGrace = time.Second
)

// Options configures an [Upgrader]. The zero value works.
type Options struct {
	// Executable is the program Upgrade starts, resolved at every upgrade:
	// a new file renamed over the path runs, and so does a new release
	// that a symlink on the path ("current -> releases/v2") points to.
	// Default: the path this process was started from, argv[0] made
	// absolute against the working directory at New (or looked up in PATH
	// when it has no slash), as nginx does; os.Executable(), which
	// resolves symlinks once and for all, only when argv[0] does not name
	// the running program.
	Executable string

	// Args is the next generation's argv, argv[0] included. Default:
	// os.Args, so the next generation gets the same command line.
	Args []string

	// ReadyTimeout bounds how long Upgrade waits for the next generation
	// to call Ready. Past it the child is killed and reaped. Default:
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration

	// ReadyGrace is how long Upgrade watches the next generation after it
	// said ready. This generation keeps accepting meanwhile, so the grace
	// costs nothing but the time Upgrade takes. If the next generation
	// crashes within the grace, Upgrade fails. This generation then keeps
	// serving and writes its own pid back into the PID file.
	//
	// An exit on purpose is no crash, and the hand-off stands. A child
	// that leaves on purpose says so on the readiness pipe first: its own
	// next generation said ready, a stop signal reached its Server, or it
	// called Shutdown or Close. An exit with status 0 counts as on purpose
	// too. The end of Upgrade's context ends the grace early, and the
	// hand-off stands.
	//
	// Default: 0, hand over at once. A next generation that crashes right
	// after Ready then leaves nobody serving until a supervisor restarts
	// the service, and the PID file names a dead process.
	ReadyGrace time.Duration

	// PIDFile, if set, is written by Ready (a temp file renamed into
	// place) with this process's pid, and removed on Shutdown only if it
	// still holds this pid and no next generation took over. Where the
	// directory lets this process write the file but not create or remove
	// files (a pid file made for the service's user in a root-owned
	// /run), Ready writes it in place, truncate then write, which is not
	// atomic, and Shutdown empties it instead of removing it.
	PIDFile string

	// UnixMode is the permission given to Unix socket files before they
	// accept connections. Default: DefaultUnixMode (0600).
	UnixMode fs.FileMode

	// MaxGenerations bounds how many generations of this service may be
	// alive at once, counting the serving one, older ones still draining
	// and the one an Upgrade would start. An Upgrade past it fails with
	// ErrTooManyGenerations and changes nothing. Default:
	// DefaultMaxGenerations.
	MaxGenerations int

	// Logger receives one structured record per lifecycle event.
	// Default: warnings and errors only, such as a failed upgrade, a
	// failed Ready or a drain deadline, through slog.Default(). To silence
	// them, set slog.New(slog.DiscardHandler).
	Logger *slog.Logger

	// Control, if set, is the path of the control socket: a Unix stream
	// socket registered like any other (so every generation hands it to
	// the next and the path stays valid; its file is 0600 whatever UnixMode
	// says, a stale file is replaced, a live one makes New fail), on which the serving
	// generation answers upgrade, status, stop and reload requests from
	// root and its own uid, from Ready on (see the package doc); upgrade,
	// stop and reload are carried out by the Server loop, as signals are. Linux only:
	// elsewhere New fails with ErrNotSupported. Default: none.
	Control string

	// Takeover, if set, is the path of the control socket of a running
	// generation of this service that this process did not start (a
	// blue/green deploy, a second unit, a binary started by hand): New
	// asks it for every socket it holds and takes them over, as an
	// Upgrade's child inherits them, and this process becomes its next
	// generation. It claims them by name and address as a child does; the
	// old generation stops accepting once Ready has returned here, hands
	// its idle connections over, drains and exits. Ready blocks until the
	// old generation has confirmed (a few milliseconds); if it gave up
	// meanwhile (its ready timeout, a stop), Ready fails and this process
	// must not serve. If nothing listens at the path (no socket file, or
	// connection refused), New starts cold and binds its own sockets. A
	// refusal (another upgrade runs, not ready yet) or a failure makes
	// New fail and changes nothing in the running generation. Ignored in
	// a process started by Upgrade (its parent handed it the sockets),
	// so that an upgrade of the taker takes nothing over again. Linux
	// only. The path may be this process's own Control path: the control
	// socket is handed over with the others. Default: none.
	Takeover string

	// OnEvent, if set, receives every lifecycle event of this generation
	// (see [Event]), one at a time, in the order they happen, after the
	// library has acted on each (logged it, told the service manager).
	// It is called from the goroutine where the event happens, never on
	// the accept path; it must return quickly and must not call Upgrade,
	// Ready, Shutdown or Close (Status and Stats are fine). Default: none.
	OnEvent func(Event)

	// State, if set, is called once when this generation has handed over
	// to the next one and its drain is over (every connection finished,
	// moved or cut), and after what it inherited itself has arrived: what
	// it returns, at most [MaxState] bytes, goes to the next generation,
	// which reads it with [Upgrader.Inherited]. A counter, a cache's
	// index, session keys: state that should outlive the process. After a
	// Shutdown without an upgrade it is called only under a service
	// manager with the fd store (see [Options.DisableFDStore]): what it
	// returns is stored there, and the next start (a `systemctl restart`)
	// reads it with Inherited. Default: none; the next generation then
	// inherits nil.
	State func() []byte

	// DrainOnly keeps connections where they are: this generation neither
	// hands its idle connections to the next one nor takes any from the
	// previous one, and they drain as [Server.RunHTTP] describes. The
	// state ([Options.State]) still goes. Default: false, connections
	// move (RunHTTP's idle HTTP/1.x connections, and those a handler gives
	// up with [Handover]).
	DrainOnly bool

	// DisableFDStore keeps this service out of systemd's fd store. By
	// default, under a service manager (NOTIFY_SOCKET set), the serving
	// generation stores the TCP and UDP sockets it bound at Ready
	// (FDSTORE=1, FDNAME= its registry name, %XX-escaped), takes out the
	// inherited ones it closed as unclaimed, and stores [Options.State]
	// as it stops after Shutdown; so under a unit with
	// FileDescriptorStoreMax= a `systemctl restart` or a crash under
	// Restart= hands the sockets to the next start, which refuses no
	// connection, and a restart hands it the state ([Upgrader.Inherited]).
	// systemd 252 tells a service nothing of its store: a unit without
	// one closes the fds and logs a warning for each socket at each cold
	// start ("Cannot store more fds than FileDescriptorStoreMax=0"). Set
	// DisableFDStore to send nothing to the store (a unit without one,
	// or a program that keeps the store itself). Default: false.
	DisableFDStore bool
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return DefaultReadyTimeout
}

func (o Options) maxGenerations() int {
	if o.MaxGenerations > 0 {
		return o.MaxGenerations
	}
	return DefaultMaxGenerations
}

func (o Options) unixMode() fs.FileMode {
	if o.UnixMode != 0 {
		return o.UnixMode
	}
	return DefaultUnixMode
}
