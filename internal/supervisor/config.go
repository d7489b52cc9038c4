package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Defaults for the zero values of [Config].
const (
	// DefaultReadyTimeout is how long a new instance may take to become
	// ready: a minute, as the library's Upgrade waits.
	DefaultReadyTimeout = time.Minute
	// DefaultStopTimeout is how long an instance told to stop may drain
	// before it is killed.
	DefaultStopTimeout = 30 * time.Second
	// DefaultMaxInstances bounds the instances alive at once: the serving
	// one, one starting and the ones still draining.
	DefaultMaxInstances = 4
	// DefaultStartLimit is how many starts in a row may fail, before any
	// instance was ever ready, until the supervisor gives up.
	DefaultStartLimit = 5
)

// Config configures a [Supervisor]. Listen and Command are required; the
// zero value of every other field works.
type Config struct {
	// Listen are the sockets every instance gets, in LISTEN_FDS order
	// (fd 3 onwards).
	Listen []Listen

	// Command is the program each instance runs and its arguments. A
	// Command[0] without a slash is looked up in PATH, anew at every
	// start, as is a path: a new release renamed over it runs at the
	// next upgrade.
	Command []string

	// Control, if set, is the path of a control socket (Unix, mode 0600)
	// that answers tcpgrace upgrade, status, stop and reload for root and the
	// supervisor's own uid. Default: none.
	Control string

	// Takeover, if set, is the control socket of a running supervisor of
	// the same service (a blue/green deploy: a second container sharing
	// the directory of the control socket): New takes every socket over
	// from it instead of binding them (matched by name, then address, as
	// from a socket activation), the first instance starts over them, and
	// once it is ready the old supervisor stops as on SIGTERM (its
	// instances drain) and leaves the socket files in place. If nothing
	// listens there, New binds as on a cold start. Default: none.
	Takeover string

	// Metrics, if set, is a TCP address, HOST:PORT, where the supervisor
	// answers GET /metrics with its own metrics in Prometheus' text
	// format (see metrics.go): the serving generation, the instances by
	// state, restarts, crashes, upgrades, refusals and hand-off times. The
	// socket is not handed to instances; a self-upgrade passes it on.
	// Default: none.
	Metrics string

	// Events, if set, is a file to which every event of the supervisor
	// (its instances started, ready, upgraded, crashed, restarted,
	// drained; see events.go) is appended as one line of JSON. A
	// self-upgrade reopens it. Default: none.
	Events string

	// PIDFile, if set, names the supervisor: it is written once, when the
	// sockets are bound, and removed when the supervisor exits.
	PIDFile string

	// ReadyTimeout bounds how long a new instance may take to say
	// READY=1 (or to reach ReadyDelay). Default: DefaultReadyTimeout.
	ReadyTimeout time.Duration

	// StopTimeout bounds how long an instance may drain after SIGTERM;
	// then its process group is killed. Default: DefaultStopTimeout.
	StopTimeout time.Duration

	// ReadyDelay, if set, counts an instance that is still running this
	// long after its start as ready, for programs that cannot send
	// READY=1. A READY=1 that comes first counts at once. Default: 0,
	// wait for READY=1.
	ReadyDelay time.Duration

	// MaxInstances bounds the instances alive at once (serving, starting
	// and draining); an upgrade past it is refused. Default:
	// DefaultMaxInstances.
	MaxInstances int

	// StartLimit is how many starts in a row may fail (the command cannot
	// be started, exits or is not ready in time) before any instance was
	// ever ready: then the supervisor stops and Run returns 1, as
	// systemd's start limit ends a unit that never starts. Once an
	// instance has been ready, crashes and failed starts are retried
	// with the backoff forever. Default: DefaultStartLimit; negative: no
	// limit (retry forever).
	StartLimit int

	// Executable is the supervisor's own program, run by a self-upgrade
	// (SIGUSR2) in place of this one. Default: the path this process was
	// started from, looked up anew at each self-upgrade.
	Executable string

	// Args is the supervisor's own command line, argv[0] included, for a
	// self-upgrade. Default: os.Args.
	Args []string

	// Version names this build in the logs and in the hand-over state.
	Version string

	// Logger receives one structured record per event. Default:
	// slog.Default().
	Logger *slog.Logger
}

// CheckMetricsAddr checks a -metrics address: HOST:PORT (HOST may be
// empty, for every address), PORT a number from 0 to 65535. The error
// names the flag and the address.
func CheckMetricsAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-metrics %q: want HOST:PORT: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("-metrics %q: port %q: want a number from 0 to 65535", addr, port)
	}
	return nil
}

func (c *Config) check() error {
	if len(c.Listen) == 0 {
		return errors.New("at least one -listen is required")
	}
	if len(c.Command) == 0 || c.Command[0] == "" {
		return errors.New("no command: tcpgrace run [flags] -- CMD [ARGS...]")
	}
	if c.Metrics != "" {
		if err := CheckMetricsAddr(c.Metrics); err != nil {
			return err
		}
	}
	named, err := nameListens(c.Listen)
	if err != nil {
		return err
	}
	c.Listen = named
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.MaxInstances <= 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.StartLimit == 0 {
		c.StartLimit = DefaultStartLimit
	}
	if c.MaxInstances < 2 {
		return errors.New("-max-instances must be at least 2: an upgrade overlaps two instances")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
