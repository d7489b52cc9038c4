// Command http is a net/http server that replaces itself without dropping
// a request: http.Server serves on a listener from tcpgrace, and after an
// upgrade the old process lets http.Server.Shutdown finish the requests in
// flight and close its keep-alive connections cleanly, while the new
// process already accepts.
//
// Usage:
//
//	http [-http ADDR] [-pidfile PATH] [-ready-timeout DUR] [-drain-timeout DUR]
//	     [-ready-grace DUR] [-max-generations N]
//
// Endpoints: GET / answers with the serving process's pid; GET /slow?ms=N
// sleeps N milliseconds, then answers 200 with the pid.
//
// Signals: SIGUSR1 upgrades to the executable now at the path http was
// started from (a failed upgrade is logged and it keeps serving); SIGTERM
// or SIGINT stop accepting, finish open requests up to -drain-timeout and
// exit 0; SIGHUP is logged and ignored. After a successful upgrade the old
// process drains the same way and exits 0. Logs are structured (log/slog
// text) on stderr, one line per event.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// maxSlow bounds /slow?ms=N.
const maxSlow = time.Minute

type config struct {
	addr         string
	pidFile      string
	readyTimeout time.Duration
	drainTimeout time.Duration
	readyGrace   time.Duration
	maxGens      int
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	fs.StringVar(&c.addr, "http", "127.0.0.1:8080", "TCP address to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 30*time.Second, "how long open requests may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.IntVar(&c.maxGens, "max-generations", tcpgrace.DefaultMaxGenerations, "how many generations may be alive at once, draining ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
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
		fmt.Fprintln(os.Stderr, "http:", err)
		return 2
	}
	log.Info("start", "version", version)
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Logger: base,
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	// The socket inherited from the previous generation, or a new one.
	ln, err := u.Listen("http", "tcp", cfg.addr)
	if err != nil {
		u.Fail(err) // the previous generation, if any, keeps serving
		log.Error("start", "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           routes(log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Accept only once Ready has told the parent: if our start failed,
	// the parent kills us, and connections we had accepted would be reset.
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if u.HasParent() {
			return 1 // our parent keeps serving
		}
	}
	// Run serves until this generation must go (upgraded, or a stop
	// signal), then drains: http.Server.Shutdown stops taking requests,
	// closes idle keep-alive connections and lets active requests finish
	// (their responses say "Connection: close"); at the drain deadline
	// Close cuts the rest.
	server := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	err = server.Run(context.Background(), func() error { return srv.Serve(ln) }, func(ctx context.Context) error {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			return err
		}
		return nil
	})
	if errors.Is(err, tcpgrace.ErrServeFailed) {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit")
	return 0
}

// routes are the demo endpoints; both answer with this process's pid, so
// a client sees which generation served it.
func routes(log *slog.Logger) http.Handler {
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", pid)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		d := time.Duration(ms) * time.Millisecond
		if err != nil || d < 0 || d > maxSlow {
			http.Error(w, fmt.Sprintf("ms must be an integer from 0 to %d", maxSlow.Milliseconds()), http.StatusBadRequest)
			return
		}
		log.Info("slow request", "ms", ms)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fmt.Fprintf(w, "%d\n", pid)
		case <-r.Context().Done(): // the client left, or the drain deadline closed the connection
		}
	})
	return mux
}
