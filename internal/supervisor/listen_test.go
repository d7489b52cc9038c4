//go:build linux

package supervisor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseListen(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Listen
		err  string
	}{
		{in: "tcp://127.0.0.1:8080", want: Listen{Network: "tcp", Address: "127.0.0.1:8080"}},
		{in: "web=tcp://:80", want: Listen{Name: "web", Network: "tcp", Address: ":80"}},
		{in: "tcp6://[::1]:0", want: Listen{Network: "tcp6", Address: "[::1]:0"}},
		{in: "unix:///run/app.sock", want: Listen{Network: "unix", Address: "/run/app.sock"}},
		{in: "ctl=unix:///run/a%20b.sock", want: Listen{Name: "ctl", Network: "unix", Address: "/run/a b.sock"}},
		{in: "udp://0.0.0.0:5353", want: Listen{Network: "udp", Address: "0.0.0.0:5353"}},
		{in: "", err: "want tcp://HOST:PORT"},
		{in: "://x", err: "missing protocol scheme"},
		{in: "127.0.0.1:80", err: "want tcp://HOST:PORT"},
		{in: "http://127.0.0.1:80", err: `unknown scheme "http"`},
		{in: "tcp://127.0.0.1", err: "missing port"},
		{in: "tcp://127.0.0.1:http", err: `invalid port`},
		{in: "tcp://127.0.0.1:70000", err: `port "70000"`},
		{in: "tcp://127.0.0.1:80/x", err: "has no path"},
		{in: "tcp://127.0.0.1:80?x=1", err: "want tcp://HOST:PORT"},
		{in: "unix://run/app.sock", err: "three slashes"},
		{in: "unix:relative.sock", err: "want tcp://HOST:PORT"},
		{in: "a:b=tcp://:80", err: `name "a:b"`},
		{in: "=tcp://:80", err: "1 to 255 characters"},
		{in: "a b=tcp://:80", err: "without spaces"},
	} {
		got, err := ParseListen(c.in)
		if c.err != "" {
			require.Error(t, err, "%q should be refused", c.in)
			assert.Contains(t, err.Error(), c.err, "%q", c.in)
			assert.Contains(t, err.Error(), "-listen", "the error names the flag")
			continue
		}
		require.NoError(t, err, "%q", c.in)
		assert.Equal(t, c.want, got, "%q", c.in)
	}
}

func TestNameListens(t *testing.T) {
	parse := func(vs ...string) []Listen {
		var ls []Listen
		for _, v := range vs {
			l, err := ParseListen(v)
			require.NoError(t, err)
			ls = append(ls, l)
		}
		return ls
	}
	got, err := nameListens(parse("tcp://:80", "tcp6://[::1]:81", "unix:///a", "web=tcp://:82", "udp://:53"))
	require.NoError(t, err)
	var names []string
	for _, l := range got {
		names = append(names, l.Name)
	}
	assert.Equal(t, []string{"tcp", "tcp-2", "unix", "web", "udp"}, names, "defaults are the family, numbered from the second on")

	_, err = nameListens(parse("web=tcp://:80", "web=unix:///a"))
	assert.ErrorContains(t, err, `the name "web" is used twice`)
	_, err = nameListens(parse("tcp://:80", "tcp=tcp://:81"))
	assert.ErrorContains(t, err, `"tcp" is used twice`, "an explicit name may not take a default one")
}

func TestBackoff(t *testing.T) {
	assert.Zero(t, backoff(1), "the first crash in a row restarts at once")
	assert.Equal(t, []string{"100ms", "200ms", "400ms", "800ms"},
		[]string{backoff(2).String(), backoff(3).String(), backoff(4).String(), backoff(5).String()})
	assert.Equal(t, "10s", backoff(9).String())
	assert.Equal(t, "10s", backoff(1000).String(), "capped, with no overflow")
}

func TestConfigDefaults(t *testing.T) {
	l, err := ParseListen("tcp://:80")
	require.NoError(t, err)
	c := Config{Listen: []Listen{l}, Command: []string{"app"}}
	require.NoError(t, c.check())
	assert.Equal(t, DefaultReadyTimeout, c.ReadyTimeout)
	assert.Equal(t, DefaultStopTimeout, c.StopTimeout)
	assert.Equal(t, DefaultMaxInstances, c.MaxInstances)
	assert.Equal(t, "tcp", c.Listen[0].Name)
	assert.ErrorContains(t, (&Config{Command: []string{"app"}}).check(), "-listen")
	assert.ErrorContains(t, (&Config{Listen: []Listen{l}}).check(), "no command")
	assert.ErrorContains(t, (&Config{Listen: []Listen{l}, Command: []string{"app"}, MaxInstances: 1}).check(), "-max-instances")
}
