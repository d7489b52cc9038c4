// Command grpc is a gRPC server that replaces itself without failing a
// call: grpc.Server serves on a listener from tcpgrace, and after an
// upgrade the old process's GracefulStop sends GOAWAY (clients open their
// next calls to the new process) and lets the calls in flight, streams
// included, run to their end.
//
// Usage:
//
//	grpc [-grpc ADDR] [-stream-interval DUR] [-pidfile PATH] [-ready-timeout DUR]
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
// successful upgrade the old process drains the same way and exits 0.
// Logs are structured (log/slog text) on stderr, one line per event.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

type config struct {
	addr           string
	streamInterval time.Duration
	pidFile        string
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
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 30*time.Second, "how long calls in flight may take to finish on exit")
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
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Logger: base,
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
		if u.HasParent() {
			return 1 // our parent keeps serving
		}
	}
	sv := &serving{done: make(chan struct{})}
	go func() {
		sv.err = srv.Serve(ln)
		close(sv.done)
	}()
	serveErr := waitForExit(u, sigs, sv)
	log.Info("draining", "reason", exitReason(u, serveErr))
	drain(srv, sv, u, cfg.drainTimeout, log)
	if serveErr != nil {
		log.Error("exit", "err", serveErr)
		return 1
	}
	log.Info("exit")
	return 0
}

// serving is srv.Serve running in its own goroutine.
type serving struct {
	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned; read it after done is closed
}

// waitForExit acts on signals (tcpgrace.Server.Wait) until this
// generation has to go: after a successful upgrade (our listener is closed
// already) or a stop signal it returns nil; if the server fails on its own
// it returns that error.
func waitForExit(u *tcpgrace.Upgrader, sigs <-chan os.Signal, sv *serving) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sv.done:
			if !(sv.err == nil || errors.Is(sv.err, net.ErrClosed)) {
				cancel() // the server failed: stop waiting
			}
		case <-ctx.Done():
		}
	}()
	if err := (&tcpgrace.Server{Upgrader: u, Signals: sigs}).Wait(ctx); err != nil {
		<-sv.done
		return sv.err
	}
	return nil
}

// exitReason says why this generation leaves, for the log.
func exitReason(u *tcpgrace.Upgrader, serveErr error) string {
	select {
	case <-u.Exit():
		return "upgraded" // Exit is closed by a successful upgrade (Shutdown comes later)
	default:
	}
	if serveErr != nil {
		return "serve failed"
	}
	return "stop signal"
}

// drain finishes this generation within timeout. GracefulStop sends
// GOAWAY on every connection, so clients start their next calls elsewhere,
// and waits for the calls in flight; it has no deadline of its own, so it
// runs in a goroutine and Stop cancels what is left at the deadline. Once
// Serve has returned, every connection it accepted is known to the
// Upgrader, whose Shutdown waits for any still open, releases the socket
// (after a stop) and removes the pid file if it is still ours.
func drain(srv *grpc.Server, sv *serving, u *tcpgrace.Upgrader, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		log.Warn("drain deadline: cancelling the calls in flight")
		srv.Stop()
		<-stopped
	}
	<-sv.done // prompt: GracefulStop and Stop close the listener
	if err := u.Shutdown(ctx); err != nil {
		log.Warn("drained", "err", err)
	}
}
