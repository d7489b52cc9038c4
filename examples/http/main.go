// Command http is a net/http server that replaces itself without dropping
// a request: http.Server serves on a listener from tcpgrace, and after an
// upgrade the old process, while the new one already accepts, keeps
// answering the requests on its open connections, each with "Connection:
// close", so that clients reconnect to the new process without an error.
//
// Usage:
//
//	http [-http ADDR] [-pidfile PATH] [-metrics ADDR] [-control PATH] [-ready-timeout DUR]
//	     [-drain-timeout DUR] [-ready-grace DUR] [-idle-grace DUR] [-max-generations N]
//
// Endpoints: GET / answers with the serving process's pid, and so does
// POST / (after reading the body); GET /slow?ms=N
// sleeps N milliseconds, then answers 200 with the pid. With -metrics
// ADDR, GET /metrics on that address answers with the Prometheus metrics
// of tcpgrace/metrics; the listener is registered with the library as
// "metrics", so it is handed over at each upgrade like the HTTP one, and
// the two addresses serve nothing of each other's.
//
// Signals: SIGUSR1 upgrades to the executable now at the path http was
// started from (a failed upgrade is logged and it keeps serving); SIGTERM
// or SIGINT stop accepting, finish open requests up to -drain-timeout and
// exit 0; SIGHUP is logged and ignored. After a successful upgrade the old
// process drains the same way and exits 0. With -control PATH it also
// answers tcpgrace upgrade, status and stop on that Unix socket (see
// cmd/tcpgrace); signals keep working beside it. Logs are structured
// (log/slog text) on stderr, one line per event.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
	"github.com/tcpgrace/tcpgrace/tcpgrace/metrics"
)

// maxSlow bounds /slow?ms=N.
const maxSlow = time.Minute

type config struct {
	addr         string
	metrics      string // "": no metrics listener
	pidFile      string
	control      string
	readyTimeout time.Duration
	drainTimeout time.Duration
	readyGrace   time.Duration
	idleGrace    time.Duration
	maxGens      int
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	fs.StringVar(&c.addr, "http", "127.0.0.1:8080", "TCP address to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.metrics, "metrics", "", "TCP address to serve GET /metrics (Prometheus) on")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status and stop on this Unix socket")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long open requests may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.DurationVar(&c.idleGrace, "idle-grace", tcpgrace.DefaultIdleGrace, "while draining, close a keep-alive connection idle this long")
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
		MaxGenerations: cfg.maxGens, Control: cfg.control, Logger: base,
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	// The sockets inherited from the previous generation, or new ones.
	ln, mln, err := listen(u, cfg)
	if err != nil {
		u.Fail(err) // the previous generation, if any, keeps serving
		log.Error("start", "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           handler(u, routes(log), mln),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Accept only once Ready has told the parent: if our start failed,
	// the parent kills us, and connections we had accepted would be reset.
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
			return 1 // not serving: our parent keeps serving
		}
	}
	// RunHTTP serves until this generation must go (upgraded, or a stop
	// signal), then drains: it keeps serving the requests that arrive on
	// open connections, answers each with "Connection: close" so the
	// client's next request reaches the new generation, closes
	// connections left idle for -idle-grace, and at the drain deadline cuts
	// the rest.
	server := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout, IdleGrace: cfg.idleGrace}
	err = server.RunHTTP(context.Background(), srv, serving(ln, mln)...)
	if errors.Is(err, tcpgrace.ErrServeFailed) {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit")
	return 0
}

// listen registers the HTTP listener and, with -metrics, the metrics
// listener (else mln is nil).
func listen(u *tcpgrace.Upgrader, cfg *config) (ln, mln net.Listener, err error) {
	if ln, err = u.Listen("http", "tcp", cfg.addr); err != nil || cfg.metrics == "" {
		return ln, nil, err
	}
	mln, err = u.Listen("metrics", "tcp", cfg.metrics)
	return ln, mln, err
}

// serving lists the listeners that are not nil.
func serving(listeners ...net.Listener) []net.Listener {
	var out []net.Listener
	for _, ln := range listeners {
		if ln != nil {
			out = append(out, ln)
		}
	}
	return out
}

// handler serves app on every listener but mln, and only GET /metrics
// on mln (if not nil): one http.Server serves them all, and a request
// goes by the local address of the connection it came on.
func handler(u *tcpgrace.Upgrader, app http.Handler, mln net.Listener) http.Handler {
	if mln == nil {
		return app
	}
	maddr := mln.Addr()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(u))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr); local != nil && onListener(local, maddr) {
			mux.ServeHTTP(w, r)
			return
		}
		app.ServeHTTP(w, r)
	})
}

// onListener reports whether local, a connection's local address, is
// one that the listener bound to ln accepts on: the same port, and the
// same IP unless ln's is the unspecified one (0.0.0.0 or ::).
func onListener(local, ln net.Addr) bool {
	l, ok1 := local.(*net.TCPAddr)
	a, ok2 := ln.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return local.String() == ln.String()
	}
	return l.Port == a.Port && (a.IP.IsUnspecified() || a.IP.Equal(l.IP))
}

// routes are the demo endpoints; both answer with this process's pid, so
// a client sees which generation served it.
func routes(log *slog.Logger) http.Handler {
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", pid)
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
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
