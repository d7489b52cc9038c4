package main

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUsage: usage errors exit 2, a missing socket 3, and say why on
// stderr; help exits 0.
func TestUsage(t *testing.T) {
	t.Setenv(envControl, "")
	none := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, exitUsage, "usage: tcpgrace COMMAND"},
		{"unknown command", []string{"restart"}, exitUsage, `unknown command "restart"`},
		{"help", []string{"help"}, exitOK, ""},
		{"no control path", []string{"status"}, exitUsage, "no control socket: give -control PATH or set TCPGRACE_CONTROL"},
		{"unknown flag", []string{"upgrade", "-control", none, "-fast"}, exitUsage, "flag provided but not defined: -fast"},
		{"extra argument", []string{"stop", "-control", none, "now"}, exitUsage, `unexpected argument "now"`},
		{"negative timeout", []string{"upgrade", "-control", none, "-timeout", "-1s"}, exitUsage, "-timeout -1s"},
		{"zero timeout", []string{"upgrade", "-control", none, "-timeout", "0"}, exitUsage, "-timeout 0s: give a duration from 1ms to 24h"},
		{"timeout above 24h", []string{"upgrade", "-control", none, "-timeout", "25h"}, exitUsage, "-timeout 25h0m0s: give a duration from 1ms to 24h"},
		{"no socket", []string{"upgrade", "-control", none}, exitUnreachable, "no such file or directory"},
		{"no socket, status", []string{"status", "-control", none}, exitUnreachable, "no such file or directory"},
		{"no socket, reload", []string{"reload", "-control", none}, exitUnreachable, "no such file or directory"},
		{"no socket, stop -wait", []string{"stop", "-control", none, "-wait"}, exitUnreachable, "no such file or directory"},
		{"stop -timeout without -wait", []string{"stop", "-control", none, "-timeout", "1s"}, exitUsage, "-timeout bounds -wait: give -wait too"},
		{"stop -wait -timeout 0", []string{"stop", "-control", none, "-wait", "-timeout", "0"}, exitUsage, "-timeout 0s: give a positive duration"},
		{"version with an argument", []string{"version", "now"}, exitUsage, `unexpected argument "now"`},
		{"run with a negative -start-limit", []string{"run", "-start-limit", "-1", "-listen", "tcp://127.0.0.1:0", "--", "app"}, exitUsage, "-start-limit -1: give a count, or 0 for no limit"},
		{"run without -listen", []string{"run", "--", "app"}, exitUsage, "tcpgrace run: at least one -listen is required"},
		{"run without a command", []string{"run", "-listen", "tcp://127.0.0.1:0"}, exitUsage, "tcpgrace run: no command"},
		{"run with a bad -listen", []string{"run", "-listen", "http://x:1", "--", "app"}, exitUsage, `unknown scheme "http"`},
		{"run with -metrics without a port", []string{"run", "-metrics", "127.0.0.1", "-listen", "tcp://127.0.0.1:0", "--", "app"}, exitUsage, `tcpgrace run: -metrics "127.0.0.1": want HOST:PORT`},
		{"run with a bad -metrics port", []string{"run", "-metrics", "127.0.0.1:99999", "-listen", "tcp://127.0.0.1:0", "--", "app"}, exitUsage, `tcpgrace run: -metrics "127.0.0.1:99999": port "99999"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, tc.code, dispatch(tc.args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
			assert.Contains(t, stderr.String(), tc.stderr, "stderr says why")
		})
	}
}

// TestControlFromEnvironment: TCPGRACE_CONTROL stands in for -control.
func TestControlFromEnvironment(t *testing.T) {
	none := filepath.Join(t.TempDir(), "env.sock")
	t.Setenv(envControl, none)
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitUnreachable, dispatch([]string{"status"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), none+": control: no reply", "the path from the environment was dialled")
}

// TestRunDrainTimeoutAlias: tcpgrace run takes -drain-timeout, the
// library's word, as the same setting as -stop-timeout; the last one
// given wins.
func TestRunDrainTimeoutAlias(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-listen", "tcp://127.0.0.1:0", "-drain-timeout", "7s", "--", "true"}, 7 * time.Second},
		{[]string{"-listen", "tcp://127.0.0.1:0", "-stop-timeout", "3s", "--", "true"}, 3 * time.Second},
		{[]string{"-listen", "tcp://127.0.0.1:0", "-stop-timeout", "3s", "-drain-timeout", "9s", "--", "true"}, 9 * time.Second},
	} {
		f, err := parseRunFlags(tc.args, io.Discard)
		require.NoError(t, err, "%v", tc.args)
		assert.Equal(t, tc.want, f.StopTimeout, "%v", tc.args)
	}
}
