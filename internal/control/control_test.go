package control

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseRequest: good requests of every command, and each way a line
// can be wrong, with an error that says how.
func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Request
		err        string
	}{
		{"status", `{"v":1,"cmd":"status"}`, Request{V: 1, Cmd: CmdStatus}, ""},
		{"stop", `{"v":1,"cmd":"stop"}`, Request{V: 1, Cmd: CmdStop}, ""},
		{"reload", `{"v":1,"cmd":"reload"}`, Request{V: 1, Cmd: CmdReload}, ""},
		{"upgrade with a timeout", `{"v":1,"cmd":"upgrade","timeout_ms":1500}`, Request{V: 1, Cmd: CmdUpgrade, TimeoutMS: 1500}, ""},
		{"unknown fields ignored", `{"v":1,"cmd":"status","later":{"x":1}}`, Request{V: 1, Cmd: CmdStatus}, ""},
		{"spaces", " \t{ \"cmd\" : \"status\", \"v\" : 1 } \r", Request{V: 1, Cmd: CmdStatus}, ""},
		{"empty", ``, Request{}, "empty request"},
		{"blank", "  \t", Request{}, "empty request"},
		{"not json", `status`, Request{}, "malformed request"},
		{"cut short", `{"v":1,"cmd":"sta`, Request{}, "malformed request"},
		{"two objects", `{"v":1,"cmd":"status"}{"v":1,"cmd":"stop"}`, Request{}, "malformed request"},
		{"array", `[]`, Request{}, "malformed request"},
		{"string version", `{"v":"1","cmd":"status"}`, Request{}, "malformed request"},
		{"null", `null`, Request{}, "without a protocol version"},
		{"no version", `{"cmd":"status"}`, Request{}, "without a protocol version"},
		{"version 2", `{"v":2,"cmd":"status"}`, Request{}, "protocol version 2, this server speaks 1"},
		{"no command", `{"v":1}`, Request{}, "without a command"},
		{"unknown command", `{"v":1,"cmd":"reboot"}`, Request{}, `unknown command "reboot"`},
		{"command case", `{"v":1,"cmd":"STATUS"}`, Request{}, `unknown command "STATUS"`},
		{"negative timeout", `{"v":1,"cmd":"upgrade","timeout_ms":-5}`, Request{}, "negative timeout_ms -5"},
		{"largest timeout", `{"v":1,"cmd":"upgrade","timeout_ms":86400000}`, Request{V: 1, Cmd: CmdUpgrade, TimeoutMS: MaxTimeoutMS}, ""},
		{"timeout above the limit", `{"v":1,"cmd":"upgrade","timeout_ms":86400001}`, Request{}, "timeout_ms 86400001 is above the limit of 86400000 (24h)"},
		{"timeout that overflows a duration", `{"v":1,"cmd":"upgrade","timeout_ms":9223372036854775807}`, Request{}, "above the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.line))
			if tc.err != "" {
				require.Error(t, err, "%q must be refused", tc.line)
				assert.Contains(t, err.Error(), tc.err, "the error says what is wrong")
				return
			}
			require.NoError(t, err, "%q is a good request", tc.line)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzParseRequest: no line makes ParseRequest panic, and what it takes
// is a request of this version with a known command.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"upgrade","timeout_ms":10}`, `{"v":2}`, `[`, ``, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			return
		}
		if req.V != Version || req.TimeoutMS < 0 || req.Timeout() < 0 {
			t.Fatalf("took %q as %+v", line, req)
		}
		known := false
		for _, c := range Commands {
			known = known || c == req.Cmd
		}
		if !known {
			t.Fatalf("took unknown command %q from %q", req.Cmd, line)
		}
	})
}

// serveOnce answers the first connection on a fresh socket with reply
// (raw bytes), after reading one line.
func serveOnce(t *testing.T, reply string) string {
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
		c.Read(make([]byte, MaxRequestLen))
		c.Write([]byte(reply))
	}()
	return path
}

// TestDo: a reply is returned as sent, its code too; every way of getting
// none is an error wrapping ErrConnection that says which, and whether
// the request was sent (ErrOutcomeUnknown) or not (ErrNotSent).
func TestDo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	path := serveOnce(t, `{"v":1,"ok":true,"upgrade":{"pid":7,"generation":2,"old_pid":6,"handoff_ms":1.5}}`+"\n")
	rep, err := Do(ctx, path, Request{Cmd: CmdUpgrade})
	require.NoError(t, err, "a good reply")
	assert.Equal(t, &Upgraded{PID: 7, Generation: 2, OldPID: 6, HandoffMS: 1.5}, rep.Upgrade)

	path = serveOnce(t, `{"v":1,"ok":false,"error":"no"}`+"\n")
	rep, err = Do(ctx, path, Request{Cmd: CmdStatus})
	require.NoError(t, err, "a failed request is a reply, not an error")
	assert.Equal(t, "no", rep.Error)
	assert.Empty(t, rep.Code, "a server older than the codes sends none")

	path = serveOnce(t, `{"v":1,"ok":false,"code":"refused","error":"busy"}`+"\n")
	rep, err = Do(ctx, path, Request{Cmd: CmdUpgrade})
	require.NoError(t, err)
	assert.Equal(t, CodeRefused, rep.Code, "the code is read")

	path = serveOnce(t, `{"v":1,"ok":true,"reload":{"pid":8,"generation":3,"pid_ns":"pid:[1]"}}`+"\n")
	rep, err = Do(ctx, path, Request{Cmd: CmdReload})
	require.NoError(t, err)
	assert.Equal(t, &Reloaded{PID: 8, Generation: 3, PIDNamespace: "pid:[1]"}, rep.Reload)

	for _, tc := range []struct{ name, reply, err string }{
		{"closed at once", "", "reading the reply: EOF"},
		{"cut short", `{"v":1,"ok":tr`, "reply cut short after 14 bytes"},
		{"garbage", "hello\n", "malformed reply"},
		{"other version", `{"v":9,"ok":true}` + "\n", "protocol version 9"},
		{"failure without a reason", `{"v":1,"ok":false}` + "\n", "without an error text"},
		{"too long", strings.Repeat("x", MaxReplyLen+10), "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Do(ctx, serveOnce(t, tc.reply), Request{Cmd: CmdStatus})
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrConnection), "wraps ErrConnection: %v", err)
			assert.ErrorIs(t, err, ErrOutcomeUnknown, "the request was sent")
			assert.NotErrorIs(t, err, ErrNotSent)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
	_, err = Do(ctx, filepath.Join(t.TempDir(), "none.sock"), Request{Cmd: CmdStatus})
	assert.ErrorIs(t, err, ErrConnection, "no socket")
	assert.ErrorIs(t, err, ErrNotSent, "nothing was sent")
	assert.Contains(t, err.Error(), "no such file", "says so")

	path = filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	_, err = Do(short, path, Request{Cmd: CmdStatus})
	assert.ErrorIs(t, err, ErrConnection, "a server that never answers")
	assert.ErrorIs(t, err, ErrOutcomeUnknown, "the request sits in its socket: it may still take it")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "ends at the context's deadline")
}

// TestRequestContext: a request's timeout bounds its context; without
// one the context ends only with its parent or cancel.
func TestRequestContext(t *testing.T) {
	ctx, cancel := Request{Cmd: CmdUpgrade, TimeoutMS: 1500}.Context(context.Background())
	deadline, ok := ctx.Deadline()
	require.True(t, ok, "a deadline from timeout_ms")
	assert.WithinDuration(t, time.Now().Add(1500*time.Millisecond), deadline, 100*time.Millisecond, "timeout_ms from now")
	cancel()
	assert.Error(t, ctx.Err(), "cancel ends it")

	ctx, cancel = Request{Cmd: CmdUpgrade}.Context(context.Background())
	defer cancel()
	_, ok = ctx.Deadline()
	assert.False(t, ok, "no deadline without timeout_ms")
	assert.NoError(t, ctx.Err(), "and it runs on")
}
