package tests

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeHTTPGrace is the HTTP program's -ready-grace here: long enough
// for this test to kill the new process within it on a loaded machine,
// short enough that the second upgrade's grace costs little.
const readmeHTTPGrace = 1500 * time.Millisecond

// TestReadmeHTTPProgram builds README.md's HTTP program (issue #20) and
// runs it as the README says: it answers GET / with its pid once its pid
// file names it; on SIGUSR1 a new process answers; a SIGKILL of the new
// process within -ready-grace rolls back (the old one names itself in the
// pid file again and answers alone); a second SIGUSR1 hands over for good
// (the old one exits 0 once the grace is over); SIGTERM then drains the
// new one, which exits 0.
func TestReadmeHTTPProgram(t *testing.T) {
	bin := readmeModule(t, readmeHTTPProgram)
	dir := t.TempDir()
	addr, pidFile := freeAddr(t), filepath.Join(dir, "web.pid")
	r := startReadme(t, "README HTTP program", bin, dir, pidFile, "-addr", addr, "-pidfile", pidFile, "-ready-grace", readmeHTTPGrace.String())
	first, logs, cmd, pidNow := r.first, r.logs, r.cmd, r.pidNow
	upgrade := func(from int) int {
		require.NoError(t, syscall.Kill(from, syscall.SIGUSR1))
		var next int
		waitFor(t, fmt.Sprintf("a new process in the pid file after SIGUSR1 to %d\noutput:\n%s", from, logs), func() bool {
			next = pidNow()
			return next != 0 && next != from
		})
		r.pids = append(r.pids, next)
		waitFor(t, fmt.Sprintf("GET / answered by the new process %d", next), func() bool {
			return readmeGet(t, addr, from, next) == next
		})
		return next
	}
	waitFor(t, fmt.Sprintf("the pid file to name %d\noutput:\n%s", first, logs), func() bool { return pidNow() == first })
	require.Equal(t, first, readmeGet(t, addr, first), "the HTTP program answers GET / with its pid")

	// Rollback: the new process crashes within the grace.
	crashed := upgrade(first)
	require.NoError(t, syscall.Kill(crashed, syscall.SIGKILL))
	waitFor(t, fmt.Sprintf("the old process %d back in the pid file after its successor crashed in the grace\noutput:\n%s", first, logs),
		func() bool { return pidNow() == first })
	for range 3 {
		assert.Equal(t, first, readmeGet(t, addr, first), "the old process serves alone after the rollback")
	}

	next := upgrade(first)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the old process exits 0 after the upgrade's grace")
	case <-time.After(waitTimeout + readmeHTTPGrace):
		t.Fatal("the old process did not exit after the upgrade")
	}
	assert.Equal(t, next, pidNow(), "the pid file names the new process")
	assert.Equal(t, next, readmeGet(t, addr, next), "the new process serves alone")

	require.NoError(t, syscall.Kill(next, syscall.SIGTERM))
	ws, err := reap(next, waitTimeout) // re-parented to this process, a subreaper
	require.NoError(t, err, "reaping the new process after SIGTERM")
	require.True(t, ws.Exited() && ws.ExitStatus() == 0, "the new process exits 0 after SIGTERM, not %v", ws)
}

// readmeGet sends GET / to the HTTP program at addr on a new connection
// and returns the pid in the answer, which must be one of pids.
func readmeGet(t *testing.T, addr string, pids ...int) int {
	t.Helper()
	client := &http.Client{Timeout: requestBudget, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/")
	require.NoError(t, err, "GET / from the README HTTP program")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "reading the README HTTP program's answer")
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET / answered %q", body)
	return answeringPID(t, string(body), pids)
}
