// Command http is a net/http server that replaces itself without dropping
// a request: http.Server serves on a listener from tcpgrace, and after an
// upgrade the old process, while the new one already accepts, finishes the
// requests in flight, then hands its idle keep-alive connections to the
// new process, which answers their next requests on the same TCP
// connections. With -handoff=false (and for TLS connections) it answers
// each request on its open connections with "Connection: close" instead,
// so that clients reconnect to the new process without an error.
//
// Usage:
//
//	http [-http ADDR] [-pidfile PATH] [-https ADDR -cert PATH -key PATH] [-metrics ADDR]
//	     [-handoff=BOOL] [-control PATH] [-ready-timeout DUR] [-drain-timeout DUR]
//	     [-ready-grace DUR] [-idle-grace DUR] [-max-generations N]
//
// Endpoints: GET / answers with the serving process's pid, and so does
// POST / (after reading the body); GET /slow?ms=N
// sleeps N milliseconds, then answers 200 with the pid; GET /stats
// answers {"pid":P,"generation":G,"requests":N} (application/json), N
// the requests this generation has served on every endpoint but /metrics,
// the /stats request itself included, since the first start: each
// generation hands its count to the next as its state (tcpgrace's
// Options.State) when its drain ends, and the next adds it to its own.
// Until the previous generation's count has arrived, requests counts this
// generation's only; once the previous generation has exited it is exact.
//
// With -https ADDR -cert PATH -key PATH (all three or none) the same
// endpoints are served over TLS on ADDR as well, HTTP/1.1 and HTTP/2
// (ALPN h2, http/1.1), from a listener registered with the library as
// "https" and handed over at each upgrade like the HTTP one. Each
// generation loads the certificate and key when it starts, so an upgrade
// picks up renewed files; a generation that cannot load them fails its
// start (naming the paths): a first one exits 1, a next one tells its
// parent, which keeps serving. The drain is the same as on -http for
// HTTP/1.1 connections; HTTP/2 connections get a GOAWAY from
// http.Server.Shutdown once the HTTP/1.1 ones are done; TLS connections
// never move to the next generation (Go's crypto/tls cannot hand a live
// session over): they drain. But the session-ticket keys go to each next
// generation (tcpgrace's ShareTicketKeys), so a client that reconnects
// resumes its TLS session (TLS 1.2 and 1.3) instead of a full handshake.
//
// With -metrics ADDR, GET /metrics on that address answers with the Prometheus metrics
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
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
	"github.com/tcpgrace/tcpgrace/tcpgrace/metrics"
)

// maxSlow bounds /slow?ms=N.
const maxSlow = time.Minute

type config struct {
	addr         string
	https        string // "": no TLS listener; else cert and key are set too
	cert, key    string
	metrics      string // "": no metrics listener
	pidFile      string
	control      string
	readyTimeout time.Duration
	drainTimeout time.Duration
	readyGrace   time.Duration
	idleGrace    time.Duration
	maxGens      int
	handoff      bool
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	fs.StringVar(&c.addr, "http", "127.0.0.1:8080", "TCP address to serve HTTP on")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.https, "https", "", "TCP address to serve HTTPS (HTTP/1.1 and HTTP/2) on; needs -cert and -key")
	fs.StringVar(&c.cert, "cert", "", "PEM certificate (chain) for -https, read by each generation at start")
	fs.StringVar(&c.key, "key", "", "PEM private key for -https, read by each generation at start")
	fs.StringVar(&c.metrics, "metrics", "", "TCP address to serve GET /metrics (Prometheus) on")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status and stop on this Unix socket")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long open requests may take to finish on exit")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "after the new process is ready, keep serving this long and roll back if it dies")
	fs.DurationVar(&c.idleGrace, "idle-grace", tcpgrace.DefaultIdleGrace, "while draining, close a keep-alive connection idle this long")
	fs.BoolVar(&c.handoff, "handoff", true, "hand idle keep-alive connections to the next generation (false: close them as they drain)")
	fs.IntVar(&c.maxGens, "max-generations", tcpgrace.DefaultMaxGenerations, "how many generations may be alive at once, draining ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.checkTLS(); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkTLS checks that -https, -cert and -key come all three or not at
// all, and names the ones missing.
func (c *config) checkTLS() error {
	var set, missing []string
	for _, f := range []struct{ name, value string }{{"-https", c.https}, {"-cert", c.cert}, {"-key", c.key}} {
		if f.value != "" {
			set = append(set, f.name)
		} else {
			missing = append(missing, f.name)
		}
	}
	if len(set) == 0 || len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("-https, -cert and -key go together: %s given without %s",
		strings.Join(set, " and "), strings.Join(missing, " and "))
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
	count := &counter{}
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile: cfg.pidFile, ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace,
		MaxGenerations: cfg.maxGens, Control: cfg.control, Logger: base,
		State: count.state, DrainOnly: !cfg.handoff,
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	// The sockets inherited from the previous generation, or new ones.
	lns, err := listen(u, cfg)
	if err != nil {
		u.Fail(err) // the previous generation, if any, keeps serving
		log.Error("start", "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           handler(u, routes(log, u.Generation(), count), lns.metrics),
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
	go count.inherit(u, log)
	// RunHTTP serves until this generation must go (upgraded, or a stop
	// signal), then drains. After an upgrade it finishes the requests in
	// flight and hands each idle HTTP/1.x connection to the new
	// generation. What stays (TLS, -handoff=false, a stop) is drained: it
	// keeps serving the requests that arrive on open connections, answers
	// each with "Connection: close" so the client's next request reaches
	// the new generation, closes connections left idle for -idle-grace,
	// and at the drain deadline cuts the rest. HTTP/2 connections (on -https) are left to
	// http.Server.Shutdown, which sends them a GOAWAY once the HTTP/1.x
	// connections are done.
	server := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout, IdleGrace: cfg.idleGrace}
	err = server.RunHTTP(context.Background(), srv, serving(lns.http, lns.https, lns.metrics)...)
	if errors.Is(err, tcpgrace.ErrServeFailed) {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit")
	return 0
}

// listeners are one generation's sockets, inherited or new: http
// always, https (in TLS) and metrics only with their flags, else nil.
type listeners struct{ http, https, metrics net.Listener }

// listen registers the HTTP listener and, with their flags, the HTTPS and
// metrics ones.
func listen(u *tcpgrace.Upgrader, cfg *config) (l listeners, err error) {
	if l.http, err = u.Listen("http", "tcp", cfg.addr); err != nil {
		return l, err
	}
	if cfg.https != "" {
		if l.https, err = listenTLS(u, cfg); err != nil {
			return l, err
		}
	}
	if cfg.metrics != "" {
		l.metrics, err = u.Listen("metrics", "tcp", cfg.metrics)
	}
	return l, err
}

// listenTLS loads -cert and -key, then registers the -https listener and
// wraps it in TLS, offering HTTP/2 and HTTP/1.1 by ALPN: http.Server.Serve
// hands the connections that chose h2 to its HTTP/2 server. Every
// generation loads the files anew, so an error here fails this one's
// start and leaves the previous one serving.
func listenTLS(u *tcpgrace.Upgrader, cfg *config) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(cfg.cert, cfg.key)
	if err != nil {
		return nil, fmt.Errorf("loading -cert %s and -key %s: %w", cfg.cert, cfg.key, err)
	}
	ln, err := u.Listen("https", "tcp", cfg.https)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	// Session tickets every generation can decrypt: a client resumes its
	// TLS session with the next generation instead of a full handshake.
	if err := u.ShareTicketKeys(tlsCfg); err != nil {
		return nil, err
	}
	return tls.NewListener(ln, tlsCfg), nil
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

// routes are the demo endpoints; each answers with this process's pid, so
// a client sees which generation served it. Every request they get is
// counted, before its handler runs, for /stats.
func routes(log *slog.Logger, generation int, requests *counter) http.Handler {
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(stats{PID: pid, Generation: generation, Requests: requests.total()})
	})
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.own.Add(1)
		mux.ServeHTTP(w, r)
	})
}

// counter counts requests since the first start: this generation's own,
// and what the previous generations counted (their state).
type counter struct {
	own, inherited atomic.Int64
}

func (c *counter) total() int64 { return c.own.Load() + c.inherited.Load() }

// state is the count handed to the next generation: decimal text.
func (c *counter) state() []byte { return strconv.AppendInt(nil, c.total(), 10) }

// inherit adds the previous generation's count once it arrives.
func (c *counter) inherit(u *tcpgrace.Upgrader, log *slog.Logger) {
	b, err := u.Inherited(context.Background())
	if err != nil || b == nil {
		return
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		log.Warn("the request count inherited is no count", "state", string(b))
		return
	}
	c.inherited.Store(n)
}

// stats is the answer of GET /stats. Requests counts the requests served
// since the first start (see counter).
type stats struct {
	PID        int   `json:"pid"`
	Generation int   `json:"generation"`
	Requests   int64 `json:"requests"`
}
