// Command lineserver is tcpgrace's reference raw-TCP server: it echoes
// every line it receives, on any number of TCP and Unix listeners, and
// replaces itself without dropping a connection.
//
// Usage:
//
//	lineserver [-tcp ADDR]... [-unix PATH]... [-pidfile PATH] [-control PATH] [-ready-timeout DUR] [-drain-timeout DUR]
//	           [-ready-grace DUR] [-max-generations N] [-events PATH] [-handoff=BOOL]
//
// Signals: SIGUSR1 upgrades to the executable now at the path lineserver
// was started from (a failed upgrade is logged and it keeps serving);
// SIGTERM or SIGINT stop accepting, wait for open connections up to
// -drain-timeout and exit 0; SIGHUP reopens the -events file, and without
// -events is logged and ignored (there is no configuration to reload).
// After a successful upgrade the old process hands each open connection
// to the new one between two lines (tcpgrace.Handover: a line read in
// part goes with it), and exits 0 once they are all gone; the clients
// keep their connections. With -handoff=false, or when the new process
// does not take them, it echoes on until each client closes (or the drain
// timeout), then exits 0.
// With -control PATH it also answers tcpgrace upgrade, status, stop and
// reload (which does what SIGHUP does, and fails without -events: no
// reload hook) on that Unix socket (see cmd/tcpgrace); signals keep
// working beside it.
// Logs are structured (log/slog text) on stderr, one line per event.
// With -events PATH each lifecycle event (tcpgrace.Event) is also
// appended to PATH as one line of JSON, by every generation of the
// service to the same file: kind, time (RFC 3339), pid (the process that
// writes the line), generation, other_pid (the next generation, or the
// older one that drained), reason, err, took_ms, connections, finished,
// force_closed; fields that are zero or empty are left out.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
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

type config struct {
	tcp, unix    listFlag
	pidFile      string
	control      string
	takeover     string
	readyTimeout time.Duration
	drainTimeout time.Duration
	maxGens      int
	readyGrace   time.Duration
	events       string
	handoff      bool
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("lineserver", flag.ContinueOnError)
	fs.Var(&c.tcp, "tcp", "TCP address to listen on, e.g. 127.0.0.1:8080 (repeatable)")
	fs.Var(&c.unix, "unix", "Unix socket path to listen on (repeatable)")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status, stop and reload on this Unix socket")
	fs.StringVar(&c.takeover, "takeover", "", "take every socket over from the lineserver whose control socket is this path (start cold if none serves there)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long open connections may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.StringVar(&c.events, "events", "", "append each lifecycle event to this file as a line of JSON; SIGHUP reopens it")
	fs.BoolVar(&c.handoff, "handoff", true, "hand open connections to the next generation between two lines (false: serve them until they close)")
	fs.IntVar(&c.maxGens, "max-generations", tcpgrace.DefaultMaxGenerations, "how many generations may be alive at once, draining ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(c.tcp)+len(c.unix) == 0 {
		return nil, errors.New("at least one -tcp or -unix listener is required")
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
		fmt.Fprintln(os.Stderr, "lineserver:", err)
		return 2
	}
	log.Info("start", "version", version)
	opts := tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Control: cfg.control, Takeover: cfg.takeover, Logger: base, DrainOnly: !cfg.handoff,
	}
	var events *eventLog
	if cfg.events != "" {
		events = &eventLog{path: cfg.events, log: log}
		opts.OnEvent = events.record // the first event comes from Ready, after open
	}
	u, err := tcpgrace.New(opts)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if err := events.open(); err != nil {
		u.Fail(err) // our parent, if any, logs why and keeps serving
		log.Error("start", "err", err)
		return 1
	}
	lns, err := listenAll(u, cfg)
	if err != nil {
		u.Fail(err)
		log.Error("start", "err", err)
		return 1
	}
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
			return 1 // not serving: our parent keeps serving
		}
	}
	srv := &tcpgrace.Server{Upgrader: u, Handler: echo, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	if events != nil {
		srv.Reload = events.reopen // the one thing lineserver has to reload
	}
	err = srv.Serve(context.Background(), lns...) // its "drained" line says how the drain went
	log.Info("exit", "clean", err == nil)
	return 0
}

func listenAll(u *tcpgrace.Upgrader, cfg *config) ([]net.Listener, error) {
	var lns []net.Listener
	listen := func(network, addr string) error {
		ln, err := u.Listen(network+":"+addr, network, addr)
		lns = append(lns, ln)
		return err
	}
	for _, addr := range cfg.tcp {
		if err := listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	for _, path := range cfg.unix {
		if err := listen("unix", path); err != nil {
			return nil, err
		}
	}
	return lns, nil
}

// echo writes every received line back verbatim until the peer closes.
// When this generation drains (ctx is done) it hands the connection to
// the next generation between two lines: what it read of a line not
// finished goes with it, and the next generation's echo goes on from
// there (tcpgrace.Resumed). If the connection stays here (a stop, no next
// generation takes it), echo serves it on: a line protocol has no way to
// end a connection cleanly, so it ends when the client closes or at the
// drain deadline.
func echo(ctx context.Context, c net.Conn) {
	r := newLineReader(c)
	wake := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) }) // interrupt a read: time to hand over
	defer wake()
	for {
		line, err := r.ReadBytes('\n')
		if err == nil {
			if _, err := c.Write(line); err != nil {
				break
			}
			continue
		}
		if ctx.Err() == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			break // EOF, a partial last line, or closed at the drain deadline
		}
		unread := append(line, peekAll(r)...)
		if tcpgrace.Handover(context.Background(), c, unread, nil) == nil {
			return // the next generation has it
		}
		c.SetReadDeadline(time.Time{}) // it stays: serve it on
		r = bufio.NewReader(io.MultiReader(bytes.NewReader(unread), c))
	}
	c.Close()
}

// newLineReader reads c, after what the previous generation had read of
// it and not used, if it was handed over.
func newLineReader(c net.Conn) *bufio.Reader {
	if unread, _, ok := tcpgrace.Resumed(c); ok && len(unread) > 0 {
		return bufio.NewReader(io.MultiReader(bytes.NewReader(unread), c))
	}
	return bufio.NewReader(c)
}

// peekAll returns what r holds, unread.
func peekAll(r *bufio.Reader) []byte {
	b, _ := r.Peek(r.Buffered())
	return b
}
