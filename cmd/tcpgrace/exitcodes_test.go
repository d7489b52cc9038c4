package main

import (
	"bufio"
	"bytes"
	"net"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// replyOnce answers the first connection on a fresh Unix socket with
// reply (raw bytes; none: it closes) once it has read the request line.
func replyOnce(t *testing.T, reply string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bufio.NewReader(c).ReadBytes('\n')
		c.Write([]byte(reply))
	}()
	return path
}

// TestReplyExitCodes: each code of a failed reply has its exit status; a
// reply without a code (a server older than the codes) or with a code
// this command does not know is a failure; a connection closed after the
// request was read is an unknown outcome; a success without the result
// is a server that did not understand.
func TestReplyExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		code        int
		stderr      string
	}{
		{"failed", `{"v":1,"ok":false,"code":"failed","error":"it broke"}`, exitFailed, "it broke"},
		{"no code", `{"v":1,"ok":false,"error":"old server"}`, exitFailed, "old server"},
		{"unknown code", `{"v":1,"ok":false,"code":"later","error":"new server"}`, exitFailed, "new server"},
		{"refused", `{"v":1,"ok":false,"code":"refused","error":"already in progress"}`, exitRefused, "already in progress"},
		{"bad request", `{"v":1,"ok":false,"code":"bad_request","error":"unknown command"}`, exitUsage, "unknown command"},
		{"denied", `{"v":1,"ok":false,"code":"denied","error":"permission denied: uid 7"}`, exitUnreachable, "uid 7"},
		{"closed after the request", "", exitUnknown, "request sent, no reply"},
		{"cut short", `{"v":1,"ok":tr`, exitUnknown, "reply cut short"},
		{"ok without the result", `{"v":1,"ok":true,"status":{"pid":1}}`, exitUsage, "without the reload result"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := tc.reply
			if strings.HasSuffix(reply, "}") {
				reply += "\n"
			}
			var stdout, stderr bytes.Buffer
			code := dispatch([]string{"reload", "-control", replyOnce(t, reply)}, &stdout, &stderr)
			assert.Equal(t, tc.code, code, "exit status; stderr: %s", stderr.String())
			assert.Contains(t, stderr.String(), tc.stderr, "stderr says why")
			assert.Empty(t, stdout.String(), "nothing on stdout")
		})
	}
	var stdout, stderr bytes.Buffer
	path := replyOnce(t, `{"v":1,"ok":true,"reload":{"pid":42,"generation":3}}`+"\n")
	require.Equal(t, exitOK, dispatch([]string{"reload", "-control", path}, &stdout, &stderr), "%s", stderr.String())
	assert.Equal(t, `{"pid":42,"generation":3}`+"\n", stdout.String(), "the result as one line of JSON")
}

// TestHelpListsExitCodes: every command's -h lists its flags and the exit
// statuses, and exits 0.
func TestHelpListsExitCodes(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		flags []string
		codes string
	}{
		{"upgrade", []string{"-control", "-timeout"}, exitCodesHelp},
		{"status", []string{"-control", "-human"}, exitCodesHelp},
		{"stop", []string{"-control", "-wait", "-timeout"}, exitCodesHelp},
		{"reload", []string{"-control", "-timeout"}, exitCodesHelp},
		{"run", []string{"-listen", "-control", "-start-limit", "-max-instances"}, "Exit status: that of the instance"},
		{"version", nil, "Exit status: 0, or 2 on a usage error."},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			require.Equal(t, exitOK, dispatch([]string{tc.cmd, "-h"}, &stdout, &stderr))
			help := stderr.String()
			assert.Contains(t, help, "usage: tcpgrace "+tc.cmd)
			for _, f := range tc.flags {
				assert.Contains(t, help, "\n  "+f, "lists %s", f)
			}
			assert.Contains(t, help, tc.codes, "lists the exit statuses")
		})
	}
}

// TestVersion: tcpgrace version prints the stamp and the Go version
// without a control socket.
func TestVersion(t *testing.T) {
	t.Setenv(envControl, "")
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, dispatch([]string{"version"}, &stdout, &stderr), "%s", stderr.String())
	assert.True(t, strings.HasPrefix(stdout.String(), "tcpgrace "+version+"\n"), "the stamp first: %s", stdout.String())
	assert.Contains(t, stdout.String(), "\ngo: go", "the Go version")
}

// TestPrintVersion: the module, the VCS facts and the Go version from
// the build information, a modified tree marked; facts it lacks are left
// out.
func TestPrintVersion(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.25.5", Main: debug.Module{Path: "github.com/tcpgrace/tcpgrace", Version: "v0.1.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-03T20:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}}
	var out bytes.Buffer
	printVersion(&out, info)
	assert.Equal(t, "tcpgrace "+version+"\nmodule: github.com/tcpgrace/tcpgrace v0.1.0\nrevision: abc123 (modified)\n"+
		"time: 2026-12-03T20:00:00Z\ngo: go1.25.5\n", out.String())
	info.Settings = nil
	out.Reset()
	printVersion(&out, info)
	assert.Equal(t, "tcpgrace "+version+"\nmodule: github.com/tcpgrace/tcpgrace v0.1.0\ngo: go1.25.5\n", out.String())
}
