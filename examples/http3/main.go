// Command http3 is an HTTP/3 server (quic-go) that replaces itself
// without breaking a QUIC connection: the UDP socket is handed to the next
// generation, which from then on reads every datagram and forwards those
// of the old generation's connections to it (tcpgrace/quic), so that
// connections opened before an upgrade keep being answered by the old
// process, and new ones by the new.
//
// Usage:
//
//	http3 -addr ADDR -cert PATH -key PATH -pidfile PATH [-control PATH]
//	      [-drain-timeout DUR] [-goaway-after DUR] [-ready-timeout DUR]
//
// GET / answers 200 with the serving process's pid in decimal, and a
// newline.
//
// Signals: SIGUSR1 upgrades to the executable now at the path http3 was
// started from (a failed upgrade is logged and it keeps serving); SIGTERM
// or SIGINT drain and exit 0. After a successful upgrade the old process
// drains the same way and exits 0. The drain: the old process keeps
// serving its connections until their clients have closed them all, or
// -goaway-after has passed (default 0: at once); then it sends each an
// HTTP/3 GOAWAY (http3.Server.Shutdown), so that clients finish the
// requests in flight and open new connections, which the new process
// serves; it exits once its connections are closed, and at -drain-timeout
// at the latest, closing what is left. At the end it logs what it
// forwarded and the stateless resets it sent. If it dies instead (kill
// -9), the new process answers its clients' packets with a stateless
// reset, so that they reconnect at once instead of waiting for a timeout.
//
// Each generation loads -cert and -key when it starts, so an upgrade
// picks up renewed files; one that cannot load them fails its start and
// the old one keeps serving. With -control PATH it also answers tcpgrace
// upgrade, status and stop on that Unix socket. Logs are structured
// (log/slog text) on stderr.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
	tgquic "github.com/tcpgrace/tcpgrace/tcpgrace/quic"
)

type config struct {
	addr, cert, key string
	pidFile         string
	control         string
	readyTimeout    time.Duration
	drainTimeout    time.Duration
	goawayAfter     time.Duration
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("http3", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8443", "UDP address to serve HTTP/3 on")
	fs.StringVar(&c.cert, "cert", "", "PEM certificate (chain), read by each generation at start; required")
	fs.StringVar(&c.key, "key", "", "PEM private key, read by each generation at start; required")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the serving process's pid here")
	fs.StringVar(&c.control, "control", "", "answer tcpgrace upgrade, status and stop on this Unix socket")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", tcpgrace.DefaultReadyTimeout, "how long an upgrade waits for the new process")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", tcpgrace.DefaultDrainTimeout, "how long connections may take to finish on exit")
	fs.DurationVar(&c.goawayAfter, "goaway-after", 0, "while draining, keep serving open connections this long before sending HTTP/3 GOAWAY")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.cert == "" || c.key == "" {
		return nil, errors.New("-cert and -key are required")
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
		fmt.Fprintln(os.Stderr, "http3:", err)
		return 2
	}
	u, err := tcpgrace.New(tcpgrace.Options{PIDFile: cfg.pidFile, Control: cfg.control,
		ReadyTimeout: cfg.readyTimeout, Logger: base})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	ep, ln, err := listen(u, cfg)
	if err != nil {
		u.Fail(err) // the previous generation, if any, keeps serving
		log.Error("start", "err", err)
		return 1
	}
	srv := &http3.Server{Handler: routes(), Logger: log}
	if err := u.Ready(); err != nil {
		log.Error("ready", "err", err)
		if !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
			return 1
		}
	}
	log.Info("serving", "addr", ln.Addr().String(), "generation", u.Generation())
	serve := func() error {
		if err := srv.ServeListener(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	shutdown := func(ctx context.Context) error { return drain(ctx, log, srv, ln, ep, cfg.goawayAfter) }
	server := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	if err := server.Run(context.Background(), serve, shutdown); err != nil {
		log.Error("exit", "err", err)
		if errors.Is(err, tcpgrace.ErrServeFailed) {
			return 1
		}
	}
	log.Info("exit")
	return 0
}

// listen loads the certificate, registers the UDP socket "quic" (the
// inherited one after an upgrade) under a tcpgrace/quic Endpoint, and
// listens for QUIC connections on it.
func listen(u *tcpgrace.Upgrader, cfg *config) (*tgquic.Endpoint, *quic.EarlyListener, error) {
	cert, err := tls.LoadX509KeyPair(cfg.cert, cfg.key)
	if err != nil {
		return nil, nil, fmt.Errorf("loading -cert %s and -key %s: %w", cfg.cert, cfg.key, err)
	}
	ep, err := tgquic.Listen(u, "quic", "udp", cfg.addr)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	ln, err := ep.Transport().ListenEarly(tlsCfg, &quic.Config{})
	if err != nil {
		ep.Close()
		return nil, nil, err
	}
	return ep, ln, nil
}

// drain ends this generation's HTTP/3 service: it waits until its
// connections are all closed or goawayAfter has passed, then sends GOAWAY
// and waits for the rest (http3.Server.Shutdown closes them at ctx's
// end), and last closes the listener and the Endpoint and logs its
// counters.
func drain(ctx context.Context, log *slog.Logger, srv *http3.Server, ln *quic.EarlyListener, ep *tgquic.Endpoint, goawayAfter time.Duration) error {
	log.Info("draining", "conns", ep.Stats().Conns, "goaway_after", goawayAfter)
	linger(ctx, ep, goawayAfter)
	err := srv.Shutdown(ctx)
	ln.Close()
	st := ep.Stats()
	log.Info("quic drained", "forwarded", st.Forwarded, "forwarded_bytes", st.ForwardedBytes,
		"received", st.Received, "orphaned", st.Orphaned, "resets_sent", st.ResetsSent,
		"dropped", st.Dropped, "refused", st.Refused, "conns_left", st.Conns)
	return errors.Join(err, ep.Close())
}

// linger returns once ep has no connection open, d has passed, or ctx
// ended.
func linger(ctx context.Context, ep *tgquic.Endpoint, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ep.Stats().Conns > 0 {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// routes: GET / answers with this process's pid.
func routes() http.Handler {
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", pid)
	})
	return mux
}
