//go:build linux

package tcpgrace

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// httpRun runs an http.Server under Server.Run and returns Run's result
// channel and the server's address.
func httpRun(t *testing.T, ctx context.Context, srv *Server, handler http.Handler) (<-chan error, string) {
	t.Helper()
	ln, err := srv.Upgrader.Listen("http", "tcp", loopback)
	require.NoError(t, err)
	hs := &http.Server{Handler: handler}
	done := make(chan error, 1)
	go func() {
		done <- srv.Run(ctx, func() error { return hs.Serve(ln) }, func(ctx context.Context) error {
			if err := hs.Shutdown(ctx); err != nil {
				hs.Close()
				return err
			}
			return nil
		})
	}()
	return done, ln.Addr().String()
}

// TestRunStopSignalDrainsInFlightRequest: a stop signal makes Run drain
// the http.Server: the request in flight completes, then Run returns nil.
func TestRunStopSignalDrainsInFlightRequest(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	sigs := make(chan os.Signal, 1)
	started := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		io.WriteString(w, "done")
	})
	done, addr := httpRun(t, context.Background(), &Server{Upgrader: u, Signals: sigs, DrainTimeout: 10 * time.Second}, slow)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-started
	sigs <- syscall.SIGTERM
	assert.Equal(t, "done", <-got, "the request in flight completes during the drain")
	assert.NoError(t, <-done, "a stop signal ends Run with nil")
	_, err := http.Get("http://" + addr + "/")
	assert.Error(t, err, "the listener is closed after Run")
}

// TestRunServeFailure: a server that stops by itself ends Run with
// ErrServeFailed carrying its error; the Upgrader is shut down.
func TestRunServeFailure(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	boom := errors.New("boom")
	err := (&Server{Upgrader: u}).Run(context.Background(), func() error { return boom }, func(context.Context) error { return nil })
	assert.ErrorIs(t, err, ErrServeFailed)
	assert.ErrorIs(t, err, boom)
	assert.ErrorIs(t, u.Upgrade(context.Background()), ErrClosed, "the Upgrader was shut down")
}

// TestRunContext: the end of Run's context drains and returns its error.
func TestRunContext(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done, _ := httpRun(t, ctx, &Server{Upgrader: u}, http.NotFoundHandler())
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Error(t, (&Server{}).Run(ctx, nil, nil), "Run without an Upgrader, serve or shutdown")
}

// TestRunOwnAcceptLoop is ExampleServer_Run on a cold Upgrader (New may
// be called once per process): a server with its own accept loop answers
// a connection; the end of Run's context then closes the listener through
// shutdown, the loop ends with net.ErrClosed, which is no serve failure,
// and Run returns the context's error and nothing else.
func TestRunOwnAcceptLoop(t *testing.T) {
	u := newColdUpgrader(t, Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := u.Listen("upper", "tcp", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready(), "Ready without a parent")
	var conns sync.WaitGroup
	serve := func() error {
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			conns.Go(func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, strings.ToUpper(line))
			})
		}
	}
	shutdown := func(ctx context.Context) error {
		ln.Close()
		conns.Wait()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- (&Server{Upgrader: u, DrainTimeout: 10 * time.Second}).Run(ctx, serve, shutdown) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	io.WriteString(c, "hello\n")
	answer, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "HELLO\n", answer, "the server answers before the stop")
	cancel()
	err = <-ran
	assert.EqualError(t, err, "context canceled", "Run returns the context's error alone")
	assert.NotErrorIs(t, err, ErrServeFailed, "net.ErrClosed after shutdown is no serve failure")
}
