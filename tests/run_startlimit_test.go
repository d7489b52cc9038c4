package tests

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startFailedRe is the supervisor's line for a start that failed while
// nothing served.
var startFailedRe = regexp.MustCompile(`msg="start failed"`)

// exitStatus is the exit status in the error of exec.Cmd.Wait (0 for
// nil), or -1 if the process did not exit by itself.
func exitStatus(err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	return -1
}

// TestRunStartLimit pins issue #20's "tcpgrace run -- /nonexistent
// retries forever": a command that cannot start, or exits before it is
// ready, is started -start-limit times in a row (5 by default), then the
// supervisor exits 1 and logs the last failure.
func TestRunStartLimit(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	for _, tc := range []struct {
		name    string
		flags   []string
		command []string
		starts  int
		reason  string
	}{
		{"default, a command that does not exist", nil, []string{"/nonexistent/tcpgrace-app"}, 5, "/nonexistent/tcpgrace-app"},
		{"-start-limit 2, a command that exits", []string{"-start-limit", "2"}, []string{"sh", "-c", "exit 3"}, 2, "exit status 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := append([]string{"-listen", "tcp://127.0.0.1:0"}, tc.flags...)
			s := startRun(t, runSpec{flags: flags, command: tc.command, noWait: true})
			err := s.wait()
			assert.Equal(t, 1, exitStatus(err), "the supervisor gives up with status 1: %v\nlogs:\n%s", err, s.logs)
			assert.Equal(t, tc.starts, s.count(startFailedRe), "after %d failed starts\nlogs:\n%s", tc.starts, s.logs)
			assert.Regexp(t, fmt.Sprintf(`msg="giving up: the command never became ready" .*failed_starts=%d start_limit=%d last_failure=".*%s`,
				tc.starts, tc.starts, regexp.QuoteMeta(tc.reason)), s.logs.String(), "the last failure is logged")
			assert.Contains(t, s.logs.String(), `msg="supervisor exit" pid=`, "it exits as after a stop")
		})
	}
}

// TestRunStartLimitAfterReady: once an instance has been ready, a
// command that then fails to start keeps being restarted with the
// backoff, past -start-limit, until a stop.
func TestRunStartLimitAfterReady(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	dir := t.TempDir()
	tcp, app := freeAddr(t), filepath.Join(dir, "app")
	deployAt(t, app, []byte(fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", lineserverBin)))
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp, "-start-limit", "1"}, command: []string{app, "-tcp", tcp}})
	deployAt(t, app, []byte("#!/bin/sh\nexit 3\n"))
	require.NoError(t, syscall.Kill(s.hostPID(s.serving()), syscall.SIGKILL))
	s.waitCount(startFailedRe, 3) // past -start-limit 1: it did not give up
	assert.NotContains(t, s.logs.String(), "giving up")
	s.stop() // its status is that of whichever instance exits last: not checked
}
