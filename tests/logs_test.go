package tests

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLogsOperatorCanRead pins issue #20's log lines on lineserver: signals
// by name; an upgrade refused for now is a warning, not an error; "upgrade
// done" carries the hand-off time; a stop from the control socket says so
// (it is no stop signal); a drain is one line when it begins and one when
// it ends, with its duration, connections finished and force-closed (one
// warning for a deadline, not three); the control socket is not among the
// program's listeners; signals registered through NotifySignals draw no
// warning.
func TestLogsOperatorCanRead(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "control.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-handoff=false", "-control", ctl, "-max-generations", "2", "-drain-timeout", "400ms")
	addr := s.addr("tcp:127.0.0.1:0")
	first := s.pid()
	holdConn(t, "tcp", addr) // keeps the first generation draining until its deadline
	second := s.startUpgrade()
	waitLog(t, s, fmt.Sprintf(`msg="upgrade signal" pid=%d generation=1 signal=SIGUSR1`, first))
	waitLog(t, s, fmt.Sprintf(`msg="upgrade done: next generation serves" pid=%d generation=1 child=%d took=`, first, second))

	s.failUpgrade("too many generations alive") // the first still drains its held connection
	assert.Regexp(t, fmt.Sprintf(`level=WARN msg="upgrade refused" pid=%d `, second), s.logs.String(), "a refusal is a warning")
	assert.NotRegexp(t, fmt.Sprintf(`level=ERROR msg="upgrade failed" pid=%d `, second), s.logs.String(), "not an error")

	s.waitExit(first, 0)
	drain := linesOf(s.logs.String(), first, `msg=draining`, `msg=drained`)
	require.Len(t, drain, 2, "one line as the drain begins, one as it ends:\n%s", s.logs)
	assert.Contains(t, drain[0], "reason=upgraded")
	assert.Regexp(t, `level=WARN msg=drained .*took=\S+ finished=0 force_closed=1 err=.*1 connection still open at the drain deadline`, drain[1])
	warns := regexp.MustCompile(fmt.Sprintf(`(?m)^.*level=WARN .*pid=%d .*$`, first)).FindAllString(s.logs.String(), -1)
	assert.Len(t, warns, 1, "one warning for a drain cut at its deadline: %q", warns)

	held := holdConn(t, "tcp", addr)
	r := runTcpgrace(t, "stop", "-control", ctl)
	require.Equal(t, 0, r.code, "%s", r)
	held.Close()
	s.waitExit(second, 0)
	logs := s.logs.String()
	assert.Contains(t, logs, fmt.Sprintf(`msg="stop requested on the control socket" pid=%d `, second))
	assert.NotContains(t, logs, fmt.Sprintf(`msg="stop signal" pid=%d `, second), "a stop request is no stop signal")
	drain = linesOf(logs, second, `msg=draining`, `msg=drained`)
	require.Len(t, drain, 2, "one line as the drain begins, one as it ends:\n%s", logs)
	assert.Contains(t, drain[0], `reason="stop request"`)
	assert.Regexp(t, `level=INFO msg=drained .*took=\S+ finished=1 force_closed=0`, drain[1])
	assert.NotContains(t, logs, "tcpgrace-control:", "the control socket is not listed among the listeners")
	assert.NotContains(t, logs, "NotifySignals", "lineserver registers its signals through NotifySignals: no warning")
}

// linesOf returns pid's log lines that contain any of the substrings.
func linesOf(logs string, pid int, any ...string) []string {
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		if !strings.Contains(line, fmt.Sprintf(" pid=%d ", pid)) {
			continue
		}
		for _, a := range any {
			if strings.Contains(line, a+" ") {
				out = append(out, line)
				break
			}
		}
	}
	return out
}
