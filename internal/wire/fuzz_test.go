package wire

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzDecode feeds arbitrary TCPGRACE_FDS values to Decode. Decode must not
// panic; what it accepts must survive Encode and a second Decode unchanged;
// what it rejects must be a *DecodeError on TCPGRACE_FDS, unwrapping to
// ErrMalformed or ErrDuplicate, short enough to travel as a Fail message.
//
//	go test -fuzz=FuzzDecode -fuzztime=10s ./inherit
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		// good
		"v1;pid=100;gen=1;ready=3",
		"v1;pid=100;gen=2;ready=3;fd=web,4,tcp,127.0.0.1%3A8080;fd=ctl,5,unix,%2Frun%2Fctl.sock",
		"v1;pid=100;gen=9;ready=3;fd=v6,4,tcp6,[::1]:8080;fd=dns,5,udp,%3A53",
		"v1;fd=a+b,4,udp6,%5Bfe80%3A%3A1%25eth0%5D%3A53;ready=3;gen=2;pid=100",
		"v1;pid=100;gen=2;ready=3;fd=%E5%90%8D,4,unix,%2Fa%2Cb%3Bc%25d",
		"v1;pid=4242;gen=2;ready=3;fd=web,4,tcp,%3A80", // another process's
		"v1;pid=100;gen=4;ready=3;older=90,80;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=4;ready=3;older=;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=4;ready=3;older=90,,0,-1,+2;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=4;ready=3;older=90;older=80",
		"v1;pid=100;gen=2;ready=3;pipe=123456;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=2;ready=3;pipe=0;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=2;ready=3;pipe=18446744073709551615;pipe=1",
		"v1;pid=100;gen=2;ready=3;owned=ctl:2049:77;fd=ctl,4,unix,%2Fc.sock",
		"v1;pid=100;gen=2;ready=3;keep=sd;owned=a%3Ab:0:1,ctl:1:2;fd=a%3Ab,4,unix,%2Fa;fd=ctl,5,unix,%2Fc;fd=sd,6,unix,%2Fs",
		"v1;pid=100;gen=2;ready=3;owned=ctl:1:2,ctl:1:2;fd=ctl,4,unix,%2Fc.sock",
		"v1;pid=100;gen=2;ready=3;keep=ctl;owned=ctl:1:2;fd=ctl,4,unix,%2Fc.sock",
		"v1;pid=100;gen=2;ready=3;owned=web:1:2;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=2;ready=3;owned=:1:0,%zz:x:y,a:b;fd=ctl,4,unix,%2Fc.sock",
		"v1;pid=4242;gen=2;ready=3;pipe=5;owned=ghost:1:2", // another process's
		// hostile
		"",
		"v1",
		"v1;",
		"v1;;;;",
		"v2;pid=100;gen=1;ready=3",
		"v1;pid=100;pid=100;gen=1;ready=3",
		"v1;pid=+100;gen=01;ready=-3",
		"v1;pid=100;gen=1;ready=99999999999",
		"v1;pid=100;gen=1;ready=3;fd=web,4,tcp,%3A80;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=a,4,tcp,%3A80;fd=b,4,tcp,%3A81",
		"v1;pid=100;gen=1;ready=3;fd=,4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=%00,4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=%FF,4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=%,4,tcp,%",
		"v1;pid=100;gen=1;ready=3;fd=web,4,sctp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=web,4,tcp",
		"v1;pid=100;gen=1;ready=3;fd=web,4,tcp,%3A80,x",
		"v1;pid=100;gen=1;ready=3;fd=web,4,tcp,%00",
		"v1;pid=100;gen=1;ready=3;fd=web,2,tcp,%3A80",
		"v1;pid=100;gen=1;ready=4;fd=web,4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;x=y",
		"v1;pid=100;gen=1;ready=3;fd=" + strings.Repeat("n", MaxNameLen+1) + ",4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3;fd=" + strings.Repeat("%FF", MaxNameLen) + ",4,tcp,%3A80",
		"v1;pid=100;gen=1;ready=3" + strings.Repeat(";fd=a,4,tcp,%3A80", 50),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := Decode(fakeLookup(map[string]string{EnvFDs: v}), testPID, testPPID)
		if err != nil {
			assert.Nil(t, got, "a failed Decode must return no *Env")
			var derr *DecodeError
			require.ErrorAs(t, err, &derr, "every Decode error must be a *DecodeError")
			assert.Equal(t, EnvFDs, derr.Var, "the error must name TCPGRACE_FDS")
			assert.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrDuplicate),
				"the error must unwrap to ErrMalformed or ErrDuplicate, got %v", err)
			assert.LessOrEqual(t, len(err.Error()), MaxFailLen,
				"hostile input must not blow up the error message")
			return
		}
		if got == nil {
			return // another process's value
		}
		assert.Equal(t, EnvFDs, got.Source, "Source must be TCPGRACE_FDS")
		assert.Equal(t, testPPID, got.Writer, "a value is only honoured when written by the parent")
		assert.LessOrEqual(t, len(got.Entries), MaxEntries, "no more than MaxEntries entries")
		assert.LessOrEqual(t, len(got.Older), MaxEntries, "no more than MaxEntries older pids")
		assert.LessOrEqual(t, len(got.Owned), len(got.Entries), "no more owned files than entries")
		for _, f := range got.Owned {
			assert.NoError(t, CheckName(f.Name), "every owned file's name must be valid")
			assert.Positive(t, f.Ino, "every owned file must have an inode")
		}
		for _, pid := range got.Older {
			assert.Positive(t, pid, "every older pid must be positive")
		}
		for _, en := range got.Entries {
			assert.NoError(t, CheckName(en.Name), "every decoded name must be valid")
			assert.True(t, KnownNetwork(en.Network), "every decoded network must be known")
			assert.GreaterOrEqual(t, en.FD, ListenFDsStart, "no decoded fd may be stdio")
		}
		again := got.Encode(testPPID)
		got2, err := Decode(fakeLookup(map[string]string{EnvFDs: again}), testPID, testPPID)
		require.NoError(t, err, "Decode must accept the re-encoding %q of %q", again, v)
		assert.Equal(t, got, got2, "Decode(Encode(Decode(v))) must equal Decode(v) for %q", v)
	})
}

// FuzzListenFDs feeds arbitrary LISTEN_FDS and LISTEN_FDNAMES values
// (LISTEN_PID being ours) to Decode. Its name must not contain
// "FuzzDecode", so that -fuzz=FuzzDecode selects one target only.
//
//	go test -fuzz=FuzzListenFDs -fuzztime=10s ./inherit
func FuzzListenFDs(f *testing.F) {
	for _, seed := range []struct {
		fds, names string
		withNames  bool
	}{
		{"1", "", false},
		{"2", "web:ctl", true},
		{"2", "web:web", true},
		{"0", "", true},
		{"1", "", true},
		{"2", "web", true},
		{"2", "web:", true},
		{"1", ":", true},
		{"1", "w\x00b", true},
		{"1", "\xff", true},
		{"", "", false},
		{"-1", "", false},
		{"+1", "", false},
		{"01", "web", true},
		{"1025", "", false},
		{"99999999999", "", false},
		{"3", "a:b:c", true},
	} {
		f.Add(seed.fds, seed.names, seed.withNames)
	}
	f.Fuzz(func(t *testing.T, fds, names string, withNames bool) {
		env := map[string]string{EnvListenPID: strconv.Itoa(testPID), EnvListenFDs: fds}
		if withNames {
			env[EnvListenFDNames] = names
		}
		got, err := Decode(fakeLookup(env), testPID, testPPID)
		if err != nil {
			assert.Nil(t, got, "a failed Decode must return no *Env")
			var derr *DecodeError
			require.ErrorAs(t, err, &derr, "every Decode error must be a *DecodeError")
			assert.Contains(t, []string{EnvListenFDs, EnvListenFDNames}, derr.Var,
				"the error must name LISTEN_FDS or LISTEN_FDNAMES")
			assert.ErrorIs(t, err, ErrMalformed, "every systemd error is ErrMalformed")
			assert.LessOrEqual(t, len(err.Error()), MaxFailLen,
				"hostile input must not blow up the error message")
			return
		}
		require.NotNil(t, got, "LISTEN_PID is ours: Decode must return an *Env or an error")
		n, err := strconv.Atoi(fds)
		require.NoError(t, err, "Decode accepted LISTEN_FDS=%q, so it must be a number", fds)
		assert.Equal(t, strconv.Itoa(n), fds, "accepted LISTEN_FDS must be canonical decimal")
		require.Len(t, got.Entries, n, "one entry per fd")
		assert.Equal(t, EnvListenFDs, got.Source, "Source must be LISTEN_FDS")
		assert.Equal(t, -1, got.ReadyFD, "systemd has no readiness pipe")
		assert.Equal(t, 1, got.Generation, "a socket-activated process is generation 1")
		for i, en := range got.Entries {
			assert.Equal(t, ListenFDsStart+i, en.FD, "systemd fds are consecutive from 3")
			assert.Empty(t, en.Network, "the network is read off the socket later")
			assert.Empty(t, en.Address, "the address is read off the socket later")
			if withNames {
				assert.NoError(t, CheckName(en.Name), "every decoded name must be valid")
			} else {
				assert.Empty(t, en.Name, "without LISTEN_FDNAMES names are empty")
			}
		}
		if withNames && n > 0 {
			assert.Equal(t, names, joinNames(got.Entries), "names must be LISTEN_FDNAMES split on ':'")
		}
	})
}

func joinNames(entries []Entry) string {
	names := make([]string, len(entries))
	for i, en := range entries {
		names[i] = en.Name
	}
	return strings.Join(names, ":")
}
