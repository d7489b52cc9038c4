package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stressScript is the load client whose command line and JSON keys are a
// contract.
var stressScript = filepath.Join("..", "bench", "stress.py")

// runStress runs stress.py and returns its JSON summary and exit status.
func runStress(t *testing.T, args ...string) (map[string]float64, int) {
	t.Helper()
	cmd := exec.Command(needPython(t), append([]string{stressScript}, args...)...)
	out, err := cmd.Output()
	status := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitCode()
	} else {
		require.NoError(t, err, "running stress.py")
	}
	var summary map[string]float64
	if status != 2 {
		require.NoError(t, json.Unmarshal(out, &summary), "stress.py prints a JSON summary: %s", out)
	}
	return summary, status
}

// TestStressClientContract: against a live lineserver stress.py counts
// only successes and exits 0, with every contract key in its summary, in
// both modes (a connection per request, and K requests per connection),
// over TCP and a Unix socket.
func TestStressClientContract(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock)
	tcp := s.addr("tcp:127.0.0.1:0")
	for _, args := range [][]string{
		{"--tcp", tcp, "--workers", "2", "--max-requests", "300"},
		{"--unix", sock, "--workers", "2", "--max-requests", "300", "--per-conn", "10"},
	} {
		summary, status := runStress(t, append(args, "--duration", "20")...)
		assert.Equal(t, 0, status, "no failure, exit 0 (%v)", args)
		for _, key := range []string{"ok", "failed", "refused", "reset", "timeout", "closed", "mismatch", "rps", "p50_ms", "p99_ms", "p999_ms", "max_ms"} {
			assert.Contains(t, summary, key, "contract key %q", key)
		}
		assert.EqualValues(t, 300, summary["ok"], "bounded by --max-requests, all answered (%v)", args)
		assert.Zero(t, summary["failed"])
	}
}

// TestStressClientCountsFailures: nobody listening means refused
// connections, counted as such, and exit status 1.
func TestStressClientCountsFailures(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	// A socket file nobody listens on: refused for sure (a freed TCP port
	// could be taken by any other process meanwhile).
	sock := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	summary, status := runStress(t, "--unix", sock, "--workers", "1", "--max-requests", "20", "--duration", "10")
	assert.Equal(t, 1, status, "failures mean exit status 1")
	assert.EqualValues(t, 20, summary["refused"], "every request refused")
	assert.EqualValues(t, 20, summary["failed"], "failed is the sum of the failure kinds")
}

// TestStressClientRefusesNonLoopback: any address off this machine is
// refused with a clear message before a packet is sent.
func TestStressClientRefusesNonLoopback(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	out, err := exec.Command(needPython(t), stressScript, "--tcp", "192.0.2.1:80", "--duration", "1").CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 2, exit.ExitCode(), "a usage error")
	assert.Contains(t, string(out), "is not a loopback address")
}

// TestStressClientAcrossUpgrades: the README's lineserver demo. stress.py
// against lineserver over TCP, holding every request to the suite's
// availability bar (--timeout 1), across two live upgrades, reports 0
// failed and exits 0.
func TestStressClientAcrossUpgrades(t *testing.T) {
	python := needPython(t)
	s := startServer(t, nil, "-tcp", "127.0.0.1:0")
	cmd := exec.Command(python, stressScript, "--tcp", s.addr("tcp:127.0.0.1:0"), "--workers", "4",
		"--duration", "60", "--timeout", fmt.Sprint(requestBudget.Seconds()))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start(), "starting stress.py")
	t.Cleanup(func() { cmd.Process.Kill() })
	progress := make(chan string, 100)
	go func() {
		defer close(progress)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case progress <- sc.Text():
			default: // nobody reads any more: keep draining
			}
		}
	}()
	for first := true; first; {
		select {
		case line, ok := <-progress:
			require.True(t, ok, "stress.py ended before its first progress line")
			first = !strings.Contains(line, " ok=") || strings.Contains(line, " ok=0 ")
		case <-time.After(waitTimeout):
			t.Fatal("no progress line with successful requests from stress.py")
		}
	}
	s.upgrade()
	s.upgrade()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM), "SIGTERM makes stress.py stop and report")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(waitTimeout):
		t.Fatal("stress.py did not stop")
	}
	var summary map[string]float64
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &summary), "stress.py prints a JSON summary: %s", &stdout)
	t.Logf("stress.py: %v", summary)
	assert.NoError(t, err, "stress.py exits 0: no request failed")
	assert.Zero(t, summary["failed"], "no request failed across the upgrades")
	assert.Positive(t, summary["ok"], "requests were answered")
}
