//go:build linux

package tcpgrace

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// envSecretChild, set to a file path, makes the test binary play a next
// generation that writes its Secret(secretLabel) there in hex before its
// Ready, then serves until SIGTERM (see init).
const (
	envSecretChild = "TCPGRACE_TEST_SECRET_CHILD"
	secretLabel    = "test label"
)

// init plays the secret child before TestMain, which knows only the modes
// of main_test.go.
func init() {
	if path := os.Getenv(envSecretChild); path != "" {
		os.Exit(runSecretChild(path))
	}
}

func runSecretChild(path string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	u, err := New(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "secret child: New:", err)
		return 2
	}
	if _, err := u.ListenPacket(nameDNS, "udp4", loopback); err != nil {
		u.Fail(err)
		return 2
	}
	s := u.Secret(secretLabel) // before Ready: it is there from the start
	if err := os.WriteFile(path, []byte(hex.EncodeToString(s[:])), 0o644); err != nil {
		u.Fail(err)
		return 2
	}
	if err := u.Ready(); err != nil {
		return 2
	}
	select {
	case <-sigs:
	case <-time.After(childLifetime):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u.Shutdown(ctx)
	return 0
}

// TestSecretSurvivesUpgrade: the next generation, started by a real
// Upgrade, gets the same Secret for a label before its Ready; another
// label gives another key.
func TestSecretSurvivesUpgrade(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "secret")
	exe := filepath.Join(dir, "next")
	require.NoError(t, os.Symlink(testBinary(t), exe))
	t.Setenv(envSecretChild, out)
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	rec := newChildRecorder()
	u := newColdUpgrader(t, Options{Executable: exe, Args: []string{"tcpgrace-next", "-test.run=^$"},
		ReadyTimeout: 10 * time.Second, Logger: slog.New(rec)})
	_, err := u.ListenPacket(nameDNS, "udp4", loopback)
	require.NoError(t, err)
	require.NoError(t, u.Ready())
	want := u.Secret(secretLabel)
	assert.Equal(t, want, u.Secret(secretLabel), "the same label gives the same key")
	assert.NotEqual(t, want, u.Secret("another"), "another label gives another key")

	require.NoError(t, u.Upgrade(context.Background()), "the upgrade should succeed")
	pid := rec.next(t)
	b, err := os.ReadFile(out)
	require.NoError(t, err, "the child should have written its secret before Ready")
	assert.Equal(t, hex.EncodeToString(want[:]), string(b), "the next generation's Secret should be this one's")

	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.NoError(t, u.Shutdown(context.Background()))
	require.Eventually(t, func() bool { return !processExists(pid) }, 10*time.Second, 10*time.Millisecond,
		"the child should exit on SIGTERM")
}

// TestSecretInheritedUnasked: a generation that never calls Secret hands
// on the one it inherited; a first start makes a new one, once.
func TestSecretInheritedUnasked(t *testing.T) {
	u := newColdUpgrader(t, Options{})
	assert.Nil(t, u.tickets.secretLocked(u.inh, false), "a first start has no secret until asked")
	a := u.Secret("x")
	assert.Equal(t, a, u.Secret("x"))
	assert.NotEqual(t, [32]byte{}, a)

	r, w, err := os.Pipe()
	require.NoError(t, err)
	var secret [32]byte
	secret[0] = 42
	_, err = w.Write(wire.EncodeTicketKeys(nil, &secret))
	require.NoError(t, err)
	w.Close()
	files, err := wire.Open(&wire.Env{Source: wire.EnvFDs, Generation: 2, ReadyFD: -1, Tickets: ownFD(t, r)})
	require.NoError(t, err)
	u2, err := newUpgrader(Options{}, files)
	require.NoError(t, err)
	defer u2.Close()
	var env wire.Env
	var h handed
	u2.handTickets(&h, &env)
	require.Len(t, h.fds, 1, "the inherited secret goes on, unasked")
	defer h.close()
	b := make([]byte, 200)
	n, _ := h.fds[0].f.Read(b)
	_, got, err := wire.DecodeTicketKeys(b[:n])
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, secret, *got)
}

// ownFD gives the read end of a pipe to wire.Open, which closes it: a
// dup, with r closed, so that r's finalizer never closes the fd number
// again once something else has it.
func ownFD(t *testing.T, r *os.File) int {
	t.Helper()
	fd, err := syscall.Dup(int(r.Fd()))
	require.NoError(t, err)
	r.Close()
	return fd
}
