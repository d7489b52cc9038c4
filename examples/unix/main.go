// Command unix is a line echo server on Unix sockets only, built on
// tcpgrace.Server: it shows how socket files behave across generations.
// A cold start creates each file (replacing a stale one that nobody
// listens on) with -mode before it accepts; an upgrade hands the open
// socket to the next process and leaves the file in place, so clients keep
// connecting to the same path; a stop removes the files.
//
// Usage:
//
//	unix -unix PATH [-unix PATH]... [-mode OCTAL] [-pidfile PATH] [-control PATH] [-ready-timeout DUR]
//	     [-drain-timeout DUR] [-ready-grace DUR] [-max-generations N]
//
// Signals: SIGUSR1 upgrades to the executable now at the path unix was
// started from (a failed upgrade is logged and it keeps serving); SIGTERM
// or SIGINT stop accepting, remove the socket files, wait for open
// connections up to -drain-timeout and exit 0; SIGHUP is logged and
// ignored. After a successful upgrade the old process finishes its open
// connections (or the drain timeout) and exits 0. With -control PATH it
// also answers tcpgrace upgrade, status and stop on that Unix socket (see
// cmd/tcpgrace); signals keep working beside it. Logs are structured
// (log/slog text) on stderr, one line per event.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// listFlag is a flag that may be repeated.
type listFlag []string

// String implements flag.Value.
func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value: each use of the flag adds one value.
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// modeFlag is a file permission written in octal, e.g. 0660.
type modeFlag fs.FileMode

// String implements flag.Value.
func (m *modeFlag) String() string { return fmt.Sprintf("%#o", uint32(*m)) }

// Set implements flag.Value: an octal permission such as 0660.
func (m *modeFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v == 0 || fs.FileMode(v)&^fs.ModePerm != 0 {
		return fmt.Errorf("%q is not an octal permission from 1 to 0777", s)
	}
	*m = modeFlag(v)
	return nil
}

type config struct {
	paths        listFlag
	mode         modeFlag
	pidFile      string
	control      string
	readyTimeout time.Duration
	drainTimeout time.Duration
	readyGrace   time.Duration
	maxGens      int
}

func parseFlags(args []string) (*config, error) {
	c := config{mode: modeFlag(tcpgrace.DefaultUnixMode)}
	fs := flag.NewFlagSet("unix", flag.ContinueOnError)
	fs.Var(&c.paths, "unix", "Unix socket path to listen on (repeatable, at least one)")
	fs.Var(&c.mode, "mode", "permission of the socket files a cold start creates")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status and stop on this Unix socket")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long open connections may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.IntVar(&c.maxGens, "max-generations", tcpgrace.DefaultMaxGenerations, "how many generations may be alive at once, draining ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(c.paths) == 0 {
		return nil, errors.New("at least one -unix socket path is required")
	}
	return &c, nil
}

// version is stamped at build time (-ldflags "-X main.version=...") so that
// the logs show which binary each generation runs.
var version = "dev"

func main() { os.Exit(run()) }

func run() int {
	// Signals first: a SIGTERM that arrives before Notify would kill us.
	sigs := tcpgrace.NotifySignals()
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "unix:", err)
		return 2
	}
	log.Info("start", "version", version)
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Control: cfg.control, UnixMode: fs.FileMode(cfg.mode), Logger: base,
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	var lns []net.Listener
	for _, path := range cfg.paths {
		// The socket inherited under this name, or a new socket file.
		ln, err := u.Listen("unix:"+path, "unix", path)
		if err != nil {
			u.Fail(err) // the previous generation, if any, keeps serving
			log.Error("start", "err", err)
			return 1
		}
		lns = append(lns, ln)
	}
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
			return 1 // not serving: our parent keeps serving
		}
	}
	// Serve handles the signals: upgrade, stop, reload (none here).
	srv := &tcpgrace.Server{Upgrader: u, Handler: echo, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	err = srv.Serve(context.Background(), lns...) // its "drained" line says how the drain went
	log.Info("exit", "clean", err == nil)
	return 0
}

// echo writes every received line back verbatim until the peer closes.
// It ignores ctx: a line protocol has no way to tell a client to go
// elsewhere, and closing between lines could drop a line the client has
// just sent. So a connection is served to its end, or cut at the drain
// deadline.
func echo(_ context.Context, c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return // EOF, a partial last line, or closed at the drain deadline
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}
