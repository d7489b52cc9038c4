package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/tcpgrace/tcpgrace/internal/supervisor"
)

const runUsage = `usage: tcpgrace run [-listen [NAME=]URL]... [flags] -- CMD [ARGS...]

Holds the listening sockets and runs CMD over them, replacing it without
dropping a connection. Each instance of CMD gets the sockets as fds 3
onwards with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, as from systemd
socket activation, and NOTIFY_SOCKET, where it says READY=1 (or is ready
after -ready-delay if it cannot). The supervisor's pid never changes: it
can be PID 1 of a container.

  URL         tcp://HOST:PORT, unix:///abs/path, udp://HOST:PORT
              (tcp4, tcp6, udp4, udp6 too); NAME defaults to the family
  SIGUSR1     start a new instance; once it is ready, SIGTERM the old one
  SIGUSR2     replace the supervisor's own program in place (same pid)
  SIGHUP      forwarded to the serving instance
  SIGTERM/INT forwarded to every instance; exit with the serving one's status
              once nothing of any instance runs

An instance's processes (its session, process group and orphans) are
stopped with it when it fails, crashes or exits after its drain.

With -control PATH, "tcpgrace upgrade -control PATH" upgrades and waits for
the outcome, "tcpgrace status" lists the instances, "tcpgrace stop" stops,
"tcpgrace reload" forwards SIGHUP to the serving instance (it replies once
the signal was sent, not when the instance's reload is over).

With -takeover PATH, the supervisor takes every socket (its control socket
too) from the tcpgrace run whose control socket is at PATH instead of
binding them, as a second container of a blue/green deploy does; once its
first instance is ready, the old supervisor stops as on SIGTERM and its
instances drain. If nothing serves at PATH, it binds the sockets itself.

With -metrics HOST:PORT, GET /metrics there answers in Prometheus' text
format: tcpgrace_generation, tcpgrace_run_instances{state},
tcpgrace_run_restarts_total, tcpgrace_run_crashes_total,
tcpgrace_upgrades_total{result}, tcpgrace_upgrade_refusals_total,
tcpgrace_handoff_seconds and tcpgrace_run_start_time_seconds; the counters
count since the supervisor started, its self-upgrades included.

With -events PATH, each of the supervisor's events is appended to PATH as a
line of JSON: kind, time, pid (the supervisor), instance, generation,
reason, err, took_ms.

A command that never becomes ready (it cannot be started, exits, or is not
ready within -ready-timeout) is given -start-limit starts in a row; then the
supervisor gives up and exits 1, the last failure logged. Once an instance
has been ready, crashes are restarted with a backoff (100 ms doubling to
10 s) however often they come.

Exit status: that of the instance that served when the stop began (128+N
if signal N killed it); 1 when it cannot start or gave up at -start-limit;
2 on a usage error.

Flags:
`

// version is stamped at build time (-ldflags "-X main.version=...") and
// logged by run, so that a self-upgrade's log names both builds.
var version = "dev"

// runSignals are registered before main, so that a stop signal that
// arrives as soon as the program runs (right after a self-upgrade's exec,
// say) is acted on rather than ending the process.
var runSignals = earlySignals()

func earlySignals() <-chan os.Signal {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		return nil
	}
	return supervisor.NotifySignals()
}

// listFlag is a flag that may be repeated.
type listFlag []string

// String implements flag.Value.
func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value: each use of the flag adds one value.
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// runFlags is the command line of run.
type runFlags struct {
	supervisor.Config
}

func parseRunFlags(args []string, stderr io.Writer) (*runFlags, error) {
	var f runFlags
	var listens listFlag
	var startLimit int
	fs := flag.NewFlagSet("tcpgrace run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), runUsage); fs.PrintDefaults() }
	fs.Var(&listens, "listen", "a socket to hold, [NAME=]URL (repeatable)")
	fs.StringVar(&f.Control, "control", "", "answer tcpgrace upgrade, status, stop and reload on a Unix socket at this path")
	fs.StringVar(&f.Takeover, "takeover", "", "take every socket over from the tcpgrace run whose control socket is this path (bind them if none serves there); it drains and exits once this one's first instance is ready")
	fs.StringVar(&f.Metrics, "metrics", "", "answer GET /metrics with the supervisor's metrics (Prometheus) on this TCP address, HOST:PORT")
	fs.StringVar(&f.Events, "events", "", "append each of the supervisor's events (instances started, ready, upgraded, crashed, ...) to this file as a line of JSON")
	fs.StringVar(&f.PIDFile, "pidfile", "", "write the supervisor's pid here")
	fs.DurationVar(&f.ReadyTimeout, "ready-timeout", supervisor.DefaultReadyTimeout, "how long a new instance may take to be ready")
	fs.DurationVar(&f.StopTimeout, "stop-timeout", supervisor.DefaultStopTimeout, "how long an instance may drain after SIGTERM before SIGKILL")
	fs.DurationVar(&f.StopTimeout, "drain-timeout", supervisor.DefaultStopTimeout, "the same as -stop-timeout, in the library's word (Server.DrainTimeout)")
	fs.DurationVar(&f.ReadyDelay, "ready-delay", 0, "count an instance still running after this long as ready (for programs that cannot send READY=1)")
	fs.IntVar(&f.MaxInstances, "max-instances", supervisor.DefaultMaxInstances, "how many instances may be alive at once, draining ones included")
	fs.IntVar(&startLimit, "start-limit", supervisor.DefaultStartLimit, "give up (exit 1) after this many failed starts in a row before any instance was ready; 0: never")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, v := range listens {
		l, err := supervisor.ParseListen(v)
		if err != nil {
			return nil, err
		}
		f.Listen = append(f.Listen, l)
	}
	f.Command = fs.Args()
	if err := f.check(startLimit); err != nil {
		return nil, err
	}
	return &f, nil
}

// check rejects what the flags cannot mean and sets StartLimit from the
// -start-limit given.
func (f *runFlags) check(startLimit int) error {
	if f.Metrics != "" {
		if err := supervisor.CheckMetricsAddr(f.Metrics); err != nil {
			return err
		}
	}
	switch {
	case startLimit < 0:
		return fmt.Errorf("-start-limit %d: give a count, or 0 for no limit", startLimit)
	case len(f.Listen) == 0:
		return errors.New("at least one -listen is required")
	case len(f.Command) == 0:
		return errors.New("no command: tcpgrace run [flags] -- CMD [ARGS...]")
	}
	f.StartLimit = startLimit
	if startLimit == 0 {
		f.StartLimit = -1 // supervisor.Config's "no limit"
	}
	return nil
}

// runCmd is tcpgrace run, the supervisor: it returns the exit status of
// the instance that served when it was stopped, 2 on a usage error and 1
// when it cannot start or gave up at -start-limit.
func runCmd(args []string, _, stderr io.Writer) int {
	f, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "tcpgrace run:", err)
		return exitUsage
	}
	f.Version = version
	f.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	if check, err := supervisor.CheckRun(f.Config); check {
		if err != nil {
			fmt.Fprintln(stderr, "tcpgrace run: self-upgrade check:", err)
			return exitFailed
		}
		return exitOK
	}
	s, err := supervisor.New(f.Config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	return s.Run(runSignals)
}
