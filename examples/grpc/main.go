// Command grpc is a gRPC server that replaces itself without failing a
// call: grpc.Server serves on a listener from tcpgrace, and after an
// upgrade the old process's GracefulStop sends GOAWAY (clients open their
// next calls to the new process) and lets the calls in flight, streams
// included, run to their end.
//
// Usage:
//
//	grpc [-grpc ADDR] [-stream-interval DUR] [-pidfile PATH] [-control PATH] [-ready-timeout DUR]
//	     [-drain-timeout DUR] [-ready-grace DUR] [-max-generations N]
//
// The service, tcpgrace.example.Demo, is described by hand (service.go)
// with protobuf's well-known wrapper messages, so no protoc is needed:
//
//	rpc Echo(google.protobuf.StringValue) returns (google.protobuf.StringValue);      // "PID TEXT"
//	rpc Count(google.protobuf.Int32Value) returns (stream google.protobuf.StringValue); // N x "PID SEQ"
//
// Count sends N messages, -stream-interval apart.
//
// Signals: SIGUSR1 upgrades to the executable now at the path grpc was
// started from (a failed upgrade is logged and it keeps serving); SIGTERM
// or SIGINT stop accepting, finish the calls in flight up to
// -drain-timeout and exit 0; SIGHUP is logged and ignored. After a
// successful upgrade the old process drains the same way and exits 0. With
// -control PATH it also answers tcpgrace upgrade, status and stop on that
// Unix socket (see cmd/tcpgrace); signals keep working beside it. Logs are
// structured (log/slog text) on stderr, one line per event.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

type config struct {
	addr           string
	streamInterval time.Duration
	pidFile        string
	control        string
	readyTimeout   time.Duration
	drainTimeout   time.Duration
	readyGrace     time.Duration
	maxGens        int
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("grpc", flag.ContinueOnError)
	fs.StringVar(&c.addr, "grpc", "127.0.0.1:9090", "TCP address to serve gRPC on")
	fs.DurationVar(&c.streamInterval, "stream-interval", 100*time.Millisecond, "delay between the messages of a Count stream")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status and stop on this Unix socket")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long calls in flight may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.IntVar(&c.maxGens, "max-generations", tcpgrace.DefaultMaxGenerations, "how many generations may be alive at once, draining ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.streamInterval < 0 {
		return nil, errors.New("-stream-interval must not be negative")
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
		fmt.Fprintln(os.Stderr, "grpc:", err)
		return 2
	}
	log.Info("start", "version", version)
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Control: cfg.control, Logger: base,
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	// The socket inherited from the previous generation, or a new one.
	ln, err := u.Listen("grpc", "tcp", cfg.addr)
	if err != nil {
		u.Fail(err) // the previous generation, if any, keeps serving
		log.Error("start", "err", err)
		return 1
	}
	srv := grpc.NewServer()
	srv.RegisterService(&demoServiceDesc, &demo{pid: os.Getpid(), interval: cfg.streamInterval})
	// Accept only once Ready has told the parent: if our start failed,
	// the parent kills us, and connections we had accepted would be reset.
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
			return 1 // not serving: our parent keeps serving
		}
	}
	// Run serves until this generation must go (upgraded, or a stop
	// signal), then drains: GracefulStop sends GOAWAY on every connection,
	// so clients start their next calls elsewhere, and waits for the calls
	// in flight; it has no deadline of its own, so Stop cancels what is
	// left at the drain deadline.
	server := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	err = server.Run(context.Background(), func() error { return srv.Serve(ln) }, func(ctx context.Context) error {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
			return nil
		case <-ctx.Done():
			log.Warn("drain deadline: cancelling the calls in flight")
			srv.Stop()
			<-stopped
			return ctx.Err()
		}
	})
	if errors.Is(err, tcpgrace.ErrServeFailed) {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit")
	return 0
}
