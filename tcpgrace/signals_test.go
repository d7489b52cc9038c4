//go:build linux

package tcpgrace

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signalFeed is real signals to this process, registered with
// signal.Notify, passed one by one to a Server: send waits until the
// Server's loop has taken the signal, so signals of different numbers
// (which the runtime may deliver in any order) reach it in the order sent.
type signalFeed struct {
	t    *testing.T
	raw  chan os.Signal
	feed chan os.Signal // unbuffered: the Server's Signals
	took chan os.Signal
	done chan struct{}
}

func newSignalFeed(t *testing.T, sigs ...os.Signal) *signalFeed {
	f := &signalFeed{t: t, raw: make(chan os.Signal, 1), feed: make(chan os.Signal),
		took: make(chan os.Signal), done: make(chan struct{})}
	signal.Notify(f.raw, sigs...)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case sig := <-f.raw:
				select {
				case f.feed <- sig:
					f.took <- sig
				case <-f.done:
					return
				}
			case <-f.done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		signal.Stop(f.raw)
		close(f.done)
		wg.Wait()
	})
	return f
}

// send sends sig to this process and waits until the Server took it.
func (f *signalFeed) send(sig syscall.Signal) {
	f.t.Helper()
	require.NoError(f.t, syscall.Kill(os.Getpid(), sig), "sending %v", sig)
	select {
	case got := <-f.took:
		require.Equal(f.t, sig, got, "the Server should take the signal just sent")
	case <-time.After(ioTimeout):
		require.FailNow(f.t, "the Server did not take "+sig.String())
	}
}

// messages records the message of every log record.
type messages struct {
	mu   sync.Mutex
	msgs []string
}

func (m *messages) Enabled(context.Context, slog.Level) bool { return true }
func (m *messages) WithAttrs([]slog.Attr) slog.Handler       { return m }
func (m *messages) WithGroup(string) slog.Handler            { return m }
func (m *messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, r.Message)
	return nil
}

func (m *messages) list() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// TestServeSignalSetsConfigurable: with every signal set replaced (an
// upgrade on SIGUSR2, a reload on SIGUSR1, a stop on SIGQUIT), real
// signals do what the Server's sets say and the defaults do nothing:
// SIGHUP reloads nothing, SIGTERM and SIGINT stop nothing, SIGUSR1 starts
// no upgrade; SIGUSR1 runs the reload hook and SIGQUIT drains and returns
// nil.
func TestServeSignalSetsConfigurable(t *testing.T) {
	log := &messages{}
	// Were SIGUSR1 taken for an upgrade, it would fail at once.
	u := newColdUpgrader(t, Options{Executable: filepath.Join(t.TempDir(), "missing"), Logger: slog.New(log)})
	ln, err := u.Listen("web", "tcp", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	f := newSignalFeed(t, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT)
	reloads := make(chan struct{}, 10)
	h := &echoHandler{}
	done := serveInBackground(context.Background(), &Server{Upgrader: u, Handler: h.serve, Signals: f.feed,
		UpgradeSignals: []os.Signal{syscall.SIGUSR2},
		ReloadSignals:  []os.Signal{syscall.SIGUSR1},
		StopSignals:    []os.Signal{syscall.SIGQUIT},
		Reload:         func() error { reloads <- struct{}{}; return nil },
	}, ln)

	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		f.send(sig)
	}
	f.send(syscall.SIGUSR1)
	select {
	case <-reloads:
	case <-time.After(ioTimeout):
		t.Fatal("SIGUSR1, the reload signal here, should run the reload hook")
	}
	// The loop handles one signal at a time: the reload ran, so it is done
	// with the default signals sent before.
	assert.Empty(t, reloads, "only SIGUSR1 reloads: SIGHUP is no reload signal here")
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v): SIGTERM and SIGINT are no stop signals here", err)
	default:
	}
	echo(t, ln.Addr().String(), "still serving")
	assert.NotContains(t, log.list(), "upgrade signal", "SIGUSR1 starts no upgrade here")
	assert.NotContains(t, log.list(), "stop signal")

	f.send(syscall.SIGQUIT)
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGQUIT, the stop signal here, drains and returns nil")
	case <-time.After(ioTimeout):
		t.Fatal("SIGQUIT did not stop Serve")
	}
	assert.Contains(t, log.list(), "stop signal")
}

// TestServeCustomUpgradeSignal: with UpgradeSignals set to SIGUSR2, a
// real SIGUSR2 upgrades to the next generation, which serves the sockets,
// and Serve returns nil.
func TestServeCustomUpgradeSignal(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	f := newSignalFeed(t, syscall.SIGUSR2)
	done := serveInBackground(context.Background(), &Server{Upgrader: h.u, Handler: (&echoHandler{}).serve,
		Signals: f.feed, UpgradeSignals: []os.Signal{syscall.SIGUSR2}}, h.web, h.ctl)
	f.send(syscall.SIGUSR2)
	select {
	case err := <-done:
		assert.NoError(t, err, "Serve returns nil after the upgrade")
	case <-time.After(ioTimeout):
		t.Fatal("SIGUSR2 did not upgrade")
	}
	pid := h.startedChild()
	h.assertHandedOver(pid, "after SIGUSR2")
	h.stopChild(pid)
}

// TestServerWarnsUnregisteredSignals: a loop warns at start about an
// upgrade or stop signal its Signals channel will never deliver (Go
// ignores an unregistered SIGUSR2, so the server would never upgrade),
// and about a channel NotifySignals did not make; a complete set says
// nothing. The channels stand for NotifySignals's: registering real
// handlers would leave its goroutine running past the test.
func TestServerWarnsUnregisteredSignals(t *testing.T) {
	defaults := slices.Concat(defaultUpgradeSignals, defaultStopSignals, defaultReloadSignals)
	tests := []struct {
		name       string
		registered []os.Signal // nil: a channel NotifySignals did not make
		upgrade    []os.Signal
		want       []string
	}{
		{"defaults", defaults, nil, nil},
		{"SIGUSR2 registered", append(slices.Clone(defaults), syscall.SIGUSR2), []os.Signal{syscall.SIGUSR2}, nil},
		{"SIGUSR2 not registered", defaults, []os.Signal{syscall.SIGUSR2}, []string{"signal SIGUSR2 of this Server is not registered and will never arrive"}},
		{"own channel", nil, nil, []string{"was not made by NotifySignals"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &messages{}
			u := newColdUpgrader(t, Options{Logger: slog.New(log)})
			ch := make(chan os.Signal)
			if tt.registered != nil {
				notified.Store((<-chan os.Signal)(ch), tt.registered)
				defer notified.Delete((<-chan os.Signal)(ch))
			}
			(&Server{Upgrader: u, Signals: ch, UpgradeSignals: tt.upgrade}).checkSignals()
			var warned []string
			for _, m := range log.list() {
				if strings.Contains(m, "NotifySignals") {
					warned = append(warned, m)
				}
			}
			require.Len(t, warned, len(tt.want), "warnings: %q", warned)
			for i, w := range tt.want {
				assert.Contains(t, warned[i], w)
			}
		})
	}
}
