//go:build linux

package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/promtext"
)

// Bounds on one connection to the metrics server.
const (
	metricsReadTimeout  = 5 * time.Second
	metricsWriteTimeout = 10 * time.Second
	metricsIdleTimeout  = 30 * time.Second
	metricsDrainTimeout = time.Second // at a pause or the exit, for the scrapes being answered
)

// metricsServer answers GET /metrics on Config.Metrics with the
// supervisor's metrics, from goroutines of its own: a scrape never waits
// for the loop. The socket is the supervisor's alone (close-on-exec, never
// among an instance's fds); a self-upgrade pauses the server and passes
// the socket on, so scrapes that arrive meanwhile wait in its queue for
// the next image. Only the loop calls its methods.
type metricsServer struct {
	ln     *net.TCPListener
	render func(io.Writer) error
	log    *slog.Logger
	paused atomic.Bool   // Accept fails with errMetricsPaused
	srv    *http.Server  // nil while paused
	served chan struct{} // closed when srv's Serve returned
}

// errMetricsPaused ends the accept loop of a paused metrics server.
var errMetricsPaused = errors.New("metrics server paused")

// bindMetrics binds the metrics socket at addr (HOST:PORT).
func bindMetrics(addr string) (*net.TCPListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// adoptMetrics is the metrics socket a previous image passed on as fd.
func adoptMetrics(addr string, fd int) (*net.TCPListener, error) {
	f := os.NewFile(uintptr(fd), "metrics")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("-metrics %s: inherited fd %d: %w", addr, fd, err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("-metrics %s: inherited fd %d is a %T, not a TCP listener", addr, fd, ln)
	}
	return tl, nil
}

func newMetricsServer(ln *net.TCPListener, render func(io.Writer) error, log *slog.Logger) *metricsServer {
	return &metricsServer{ln: ln, render: render, log: log}
}

// start runs the accept loop.
func (m *metricsServer) start() {
	if m == nil || m.srv != nil {
		return
	}
	m.paused.Store(false)
	m.ln.SetDeadline(time.Time{})
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: metricsReadTimeout, ReadTimeout: metricsReadTimeout,
		WriteTimeout: metricsWriteTimeout, IdleTimeout: metricsIdleTimeout,
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	srv, served := m.srv, make(chan struct{})
	m.served = served
	go func() {
		defer close(served)
		if err := srv.Serve(pausable{m}); !errors.Is(err, errMetricsPaused) && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("metrics: no longer answering", "err", err)
		}
	}()
	m.log.Info("metrics: answering", "addr", m.ln.Addr().String())
}

// pause ends the accept loop, then waits up to metricsDrainTimeout for
// the scrapes being answered; idle connections are closed. The socket
// stays open: connections not yet accepted wait in its queue.
func (m *metricsServer) pause() {
	if m == nil || m.srv == nil {
		return
	}
	m.paused.Store(true)
	m.ln.SetDeadline(time.Unix(1, 0)) // Accept returns at once
	<-m.served
	ctx, cancel := context.WithTimeout(context.Background(), metricsDrainTimeout)
	defer cancel()
	m.srv.Shutdown(ctx) // its listener's Close is pausable's: the socket stays
	m.srv.Close()
	m.srv = nil
}

// close ends the metrics server at exit and closes its socket.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	m.pause()
	m.ln.Close()
}

// fd is the socket's own fd, for a self-upgrade.
func (m *metricsServer) fd() (int, error) {
	rc, err := m.ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	err = rc.Control(func(s uintptr) { fd = int(s) })
	return fd, err
}

// addr is the address the socket is bound to.
func (m *metricsServer) addr() string { return m.ln.Addr().String() }

// ServeHTTP answers GET (and HEAD) /metrics in Prometheus' text format;
// any other path is 404, any other method 405.
func (m *metricsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "tcpgrace run: metrics: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	var b bytes.Buffer
	if err := m.render(&b); err != nil {
		m.log.Error("metrics: rendering", "err", err)
		http.Error(w, "tcpgrace run: metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", promtext.ContentType)
	w.Write(b.Bytes())
}

// pausable is the metrics socket as the http.Server sees it: Accept fails
// with errMetricsPaused once the server is paused, and Close does nothing
// (Serve closes its listener when it returns, but the socket outlives a
// pause, and the exit closes it).
type pausable struct{ m *metricsServer }

func (p pausable) Accept() (net.Conn, error) {
	c, err := p.m.ln.Accept()
	if err != nil && p.m.paused.Load() {
		return nil, errMetricsPaused
	}
	return c, err
}

func (p pausable) Close() error   { return nil }
func (p pausable) Addr() net.Addr { return p.m.ln.Addr() }
