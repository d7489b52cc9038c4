package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// The reading process of the fake environments: its pid and its parent's.
const (
	testPID  = 200
	testPPID = 100
)

// fakeLookup is a [Lookup] over a map.
func fakeLookup(env map[string]string) Lookup {
	return func(key string) (string, bool) {
		v, ok := env[key]
		return v, ok
	}
}

// fdsValue is a TCPGRACE_FDS value written by testPPID with the given fd
// fields appended to a valid header.
func fdsValue(entries ...string) string {
	header := fmt.Sprintf("v1;pid=%d;gen=2;ready=3", testPPID)
	if len(entries) == 0 {
		return header
	}
	return header + ";fd=" + strings.Join(entries, ";fd=")
}

// manyEntries is a value with n well-formed, distinct entries.
func manyEntries(n int) string {
	entries := make([]string, n)
	for i := range entries {
		entries[i] = fmt.Sprintf("s%d,%d,tcp,127.0.0.1%%3A%d", i, 4+i, 1000+i)
	}
	return fdsValue(entries...)
}

// manyPIDs is a comma-separated list of n pids.
func manyPIDs(n int) string {
	pids := make([]string, n)
	for i := range pids {
		pids[i] = strconv.Itoa(1000 + i)
	}
	return strings.Join(pids, ",")
}

// decodeCase is one Decode call on a fake environment and what it must
// give: want on success, or an error unwrapping to wantErr, naming
// wantVar, wantEntry (-1: none) and containing wantMsg.
type decodeCase struct {
	name      string
	env       map[string]string
	want      *Env
	wantErr   error
	wantVar   string
	wantEntry int
	wantMsg   string
}

func fdsOnly(v string) map[string]string { return map[string]string{EnvFDs: v} }

// malformedFDs is a case where TCPGRACE_FDS=v is rejected as malformed.
func malformedFDs(name, v string, entry int, msg string) decodeCase {
	return decodeCase{name: name, env: fdsOnly(v), wantErr: ErrMalformed,
		wantVar: EnvFDs, wantEntry: entry, wantMsg: msg}
}

func TestDecodeNothingInherited(t *testing.T) {
	for _, env := range []map[string]string{
		nil,
		{"PATH": "/bin", "HOME": "/root"},
		{EnvListenPID: strconv.Itoa(testPID)}, // LISTEN_PID alone names no fds
		{EnvListenFDNames: "web"},
	} {
		got, err := Decode(fakeLookup(env), testPID, testPPID)
		assert.NoError(t, err, "a first start (%v) is not an error", env)
		assert.Nil(t, got, "nothing inherited from %v must decode to a nil *Env", env)
	}
}

func TestDecodeFDs(t *testing.T) {
	good := fdsValue(
		"web,4,tcp,127.0.0.1%3A8080",
		"v6,5,tcp6,%5B%3A%3A1%5D%3A8080",
		"v6raw,6,tcp6,[::1]:8081", // brackets and colons need no escaping
		"ctl,7,unix,%2Frun%2Fa%2Cb%3Bc%25d.sock",
		"dns,8,udp4,0.0.0.0%3A53",
		"na%2Cme%3B%25+x,9,tcp,%3A9090", // name with , ; % and a space
	)
	wantGood := &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3, Entries: []Entry{
		{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:8080"},
		{Name: "v6", FD: 5, Network: "tcp6", Address: "[::1]:8080"},
		{Name: "v6raw", FD: 6, Network: "tcp6", Address: "[::1]:8081"},
		{Name: "ctl", FD: 7, Network: "unix", Address: "/run/a,b;c%d.sock"},
		{Name: "dns", FD: 8, Network: "udp4", Address: "0.0.0.0:53"},
		{Name: "na,me;% x", FD: 9, Network: "tcp", Address: ":9090"},
	}}
	header := func(pid, gen, ready string) string {
		return "v1;pid=" + pid + ";gen=" + gen + ";ready=" + ready
	}
	ok := func(pid, gen, ready string) string { // a header with one field replaced
		return header(pid, gen, ready) + ";fd=web,4,tcp,127.0.0.1%3A80"
	}
	p := strconv.Itoa(testPPID)
	tests := []decodeCase{
		{name: "good", env: fdsOnly(good), want: wantGood},
		{name: "no entries", env: fdsOnly(header(p, "1", "3")),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 1, ReadyFD: 3}},
		{name: "fields in any order", env: fdsOnly("v1;fd=web,4,tcp,%3A80;ready=3;gen=2;pid=" + p),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3,
				Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		{name: "older generations", env: fdsOnly("v1;pid=100;gen=4;ready=3;older=90,80;fd=web,4,tcp,%3A80"),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 4, ReadyFD: 3, Older: []int{90, 80},
				Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		{name: "older after the entries", env: fdsOnly("v1;pid=100;gen=3;ready=3;fd=web,4,tcp,%3A80;older=90"),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 3, ReadyFD: 3, Older: []int{90},
				Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		{name: "another pid's value", env: fdsOnly(strings.Replace(good, "pid="+p, "pid=4242", 1))},
		{name: "pipe inode", env: fdsOnly("v1;pid=100;gen=2;ready=3;pipe=12345;fd=web,4,tcp,%3A80"),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3, Pipe: 12345,
				Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		// Decode cannot look at the pipe: another pid's value is ignored
		// even when it names one (Take may honour it, see TestDecodeProbesPipe).
		{name: "another pid's value with a pipe inode", env: fdsOnly("v1;pid=4242;gen=2;ready=3;pipe=12345;fd=web,4,tcp,%3A80")},
		{name: "owned files", env: fdsOnly("v1;pid=100;gen=2;ready=3;owned=ctl:2049:77,a%3Ab:0:1;fd=ctl,4,unix,%2Fc.sock;fd=a%3Ab,5,unix,%2Fab.sock"),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3,
				Owned:   []UnixFile{{Name: "ctl", FileID: sockfd.FileID{Dev: 2049, Ino: 77}}, {Name: "a:b", FileID: sockfd.FileID{Dev: 0, Ino: 1}}},
				Entries: []Entry{{Name: "ctl", FD: 4, Network: "unix", Address: "/c.sock"}, {Name: "a:b", FD: 5, Network: "unix", Address: "/ab.sock"}}}},
		{name: "owned before keep and after the entries", env: fdsOnly("v1;pid=100;gen=2;ready=3;fd=ctl,4,unix,%2Fc.sock;owned=ctl:1:2;fd=sd,5,unix,%2Fsd.sock;keep=sd"),
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3, Keep: []string{"sd"},
				Owned:   []UnixFile{{Name: "ctl", FileID: sockfd.FileID{Dev: 1, Ino: 2}}},
				Entries: []Entry{{Name: "ctl", FD: 4, Network: "unix", Address: "/c.sock"}, {Name: "sd", FD: 5, Network: "unix", Address: "/sd.sock"}}}},
		{name: "own pid instead of parent's", env: fdsOnly(strings.Replace(good, "pid="+p, "pid="+strconv.Itoa(testPID), 1))},
		{name: "exactly MaxEntries", env: fdsOnly(manyEntries(MaxEntries)), want: func() *Env {
			e := &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3}
			for i := range MaxEntries {
				e.Entries = append(e.Entries, Entry{Name: fmt.Sprintf("s%d", i), FD: 4 + i,
					Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
			}
			return e
		}()},

		malformedFDs("empty value", "", -1, `version ""`),
		malformedFDs("wrong version", "v2;pid=100;gen=1;ready=3", -1, `version "v2" is not "v1"`),
		malformedFDs("version case", "V1;pid=100;gen=1;ready=3", -1, `version "V1"`),
		malformedFDs("version only", "v1", -1, `field "pid" missing`),
		malformedFDs("missing pid", "v1;gen=1;ready=3", -1, `field "pid" missing`),
		malformedFDs("missing gen", "v1;pid=100;ready=3", -1, `field "gen" missing`),
		malformedFDs("missing ready", "v1;pid=100;gen=1", -1, `field "ready" missing`),
		malformedFDs("pid given twice", "v1;pid=100;pid=100;gen=1;ready=3", -1, `field "pid" given twice`),
		malformedFDs("ready given twice", "v1;pid=100;gen=1;ready=3;ready=3", -1, `field "ready" given twice`),
		malformedFDs("unknown field", "v1;pid=100;gen=1;ready=3;color=red", -1, `unknown field "color"`),
		malformedFDs("field without =", "v1;pid=100;gen=1;ready", -1, `field "ready" is not key=value`),
		malformedFDs("trailing ;", header(p, "1", "3")+";", -1, `field "" is not key=value`),
		malformedFDs("pid zero", ok("0", "1", "3"), -1, `field "pid": 0 is less than 1`),
		malformedFDs("pid non-numeric", ok("abc", "1", "3"), -1, `field "pid": "abc" is not a decimal number`),
		malformedFDs("gen zero", ok(p, "0", "3"), -1, `field "gen": 0 is less than 1`),
		malformedFDs("gen overflow", ok(p, "99999999999", "3"), -1, `field "gen": "99999999999" is not a decimal number`),
		malformedFDs("ready stdio", ok(p, "1", "2"), -1, `field "ready": fd 2 is stdio`),
		malformedFDs("ready negative", ok(p, "1", "-1"), -1, `field "ready": fd: -1 is less than 0`),

		malformedFDs("older empty", ok(p, "3", "3")+";older=", -1, `field "older": "" is not a decimal number`),
		malformedFDs("older empty pid", ok(p, "3", "3")+";older=90,,80", -1, `field "older": "" is not a decimal number`),
		malformedFDs("older trailing comma", ok(p, "3", "3")+";older=90,", -1, `field "older": "" is not a decimal number`),
		malformedFDs("older pid zero", ok(p, "3", "3")+";older=0", -1, `field "older": 0 is less than 1`),
		malformedFDs("older pid negative", ok(p, "3", "3")+";older=-90", -1, `field "older": -90 is less than 1`),
		malformedFDs("older pid with plus sign", ok(p, "3", "3")+";older=+90", -1, `field "older": "+90" is not a decimal number`),
		malformedFDs("older pid overflow", ok(p, "3", "3")+";older=99999999999", -1, `field "older": "99999999999" is not a decimal number`),
		malformedFDs("older given twice", ok(p, "3", "3")+";older=90;older=80", -1, `field "older" given twice`),
		malformedFDs("older too many pids", ok(p, "3", "3")+";older="+manyPIDs(MaxEntries+1), -1,
			fmt.Sprintf(`field "older": %d pids, more than %d`, MaxEntries+1, MaxEntries)),

		malformedFDs("pipe zero", ok(p, "2", "3")+";pipe=0", -1, `field "pipe": 0 is less than 1`),
		malformedFDs("pipe empty", ok(p, "2", "3")+";pipe=", -1, `field "pipe": "" is not a decimal number`),
		malformedFDs("pipe non-numeric", ok(p, "2", "3")+";pipe=ino", -1, `field "pipe": "ino" is not a decimal number`),
		malformedFDs("pipe with plus sign", ok(p, "2", "3")+";pipe=+5", -1, `field "pipe": "+5" is not a decimal number`),
		malformedFDs("pipe with leading zero", ok(p, "2", "3")+";pipe=05", -1, `field "pipe": "05" is not a decimal number`),
		malformedFDs("pipe negative", ok(p, "2", "3")+";pipe=-5", -1, `field "pipe": "-5" is not a decimal number`),
		malformedFDs("pipe overflow", ok(p, "2", "3")+";pipe=18446744073709551616", -1, `field "pipe": "18446744073709551616" is not a decimal number`),
		malformedFDs("pipe given twice", ok(p, "2", "3")+";pipe=5;pipe=5", -1, `field "pipe" given twice`),

		malformedFDs("owned empty", ok(p, "2", "3")+";owned=", -1, `field "owned": "" is not name:dev:inode`),
		malformedFDs("owned two parts", ok(p, "2", "3")+";owned=ctl:1", -1, `field "owned": "ctl:1" is not name:dev:inode`),
		malformedFDs("owned four parts", ok(p, "2", "3")+";owned=ctl:1:2:3", -1, `field "owned": "ctl:1:2:3" is not name:dev:inode`),
		malformedFDs("owned trailing comma", ok(p, "2", "3")+";owned=ctl:1:2,", -1, `field "owned": "" is not name:dev:inode`),
		malformedFDs("owned inode zero", ok(p, "2", "3")+";owned=ctl:1:0", -1, `field "owned": "ctl": inode: 0 is less than 1`),
		malformedFDs("owned device non-numeric", ok(p, "2", "3")+";owned=ctl:sda:2", -1, `field "owned": "ctl": device: "sda" is not a decimal number`),
		malformedFDs("owned inode overflow", ok(p, "2", "3")+";owned=ctl:1:18446744073709551616", -1, `"18446744073709551616" is not a decimal number`),
		malformedFDs("owned empty name", ok(p, "2", "3")+";owned=:1:2", -1, `field "owned": empty name`),
		malformedFDs("owned bad escape", ok(p, "2", "3")+";owned=c%zz:1:2", -1, `field "owned": invalid URL escape`),
		malformedFDs("owned control character", ok(p, "2", "3")+";owned=c%0A:1:2", -1, "control character"),
		malformedFDs("owned given twice", ok(p, "2", "3")+";owned=web:1:2;owned=web:1:2", -1, `field "owned" given twice`),
		malformedFDs("owned too many files", ok(p, "2", "3")+";owned="+strings.Repeat("c:1:2,", MaxEntries)+"c:1:2", -1,
			fmt.Sprintf(`field "owned": %d files, more than %d`, MaxEntries+1, MaxEntries)),
		malformedFDs("owned names no entry", fdsValue("ctl,4,unix,%2Fc.sock")+";owned=ghost:1:2", -1, `owned names "ghost", which is no unix entry`),
		malformedFDs("owned names a tcp entry", fdsValue("web,4,tcp,%3A80")+";owned=web:1:2", -1, `owned names "web", which is no unix entry`),
		malformedFDs("owned and kept", fdsValue("ctl,4,unix,%2Fc.sock")+";keep=ctl;owned=ctl:1:2", -1, `"ctl" is both kept and owned`),
		{name: "owned twice", env: fdsOnly(fdsValue("ctl,4,unix,%2Fc.sock") + ";owned=ctl:1:2,ctl:1:3"),
			wantErr: ErrDuplicate, wantVar: EnvFDs, wantEntry: -1, wantMsg: `owned names "ctl" twice`},

		malformedFDs("fd non-numeric", fdsValue("web,four,tcp,%3A80"), 0, `name "web": fd: "four" is not a decimal number`),
		malformedFDs("fd empty", fdsValue("web,,tcp,%3A80"), 0, `name "web": fd: "" is not a decimal number`),
		malformedFDs("fd negative", fdsValue("web,-4,tcp,%3A80"), 0, `name "web": fd: -4 is less than 0`),
		malformedFDs("fd with plus sign", fdsValue("web,+3,tcp,%3A80"), 0, `"+3" is not a decimal number`),
		malformedFDs("fd with leading zero", fdsValue("web,03,tcp,%3A80"), 0, `"03" is not a decimal number`),
		malformedFDs("fd minus zero", fdsValue("web,-0,tcp,%3A80"), 0, `"-0" is not a decimal number`),
		malformedFDs("fd overflow", fdsValue("web,99999999999,tcp,%3A80"), 0, `"99999999999" is not a decimal number`),
		malformedFDs("fd 2^32+4 does not wrap", fdsValue("web,4294967300,tcp,%3A80"), 0, `"4294967300" is not a decimal number`),
		malformedFDs("fd stdin", fdsValue("web,0,tcp,%3A80"), 0, `fd 0 is stdio`),
		malformedFDs("fd stderr", fdsValue("ok,4,tcp,%3A80", "web,2,tcp,%3A81"), 1, `name "web": fd 2 is stdio`),

		malformedFDs("empty name", fdsValue("ok,4,tcp,%3A80", ",5,tcp,%3A81"), 1, "empty name"),
		malformedFDs("name with NUL", fdsValue("we%00b,4,tcp,%3A80"), 0, "control character"),
		malformedFDs("name with newline", fdsValue("we%0Ab,4,tcp,%3A80"), 0, "control character"),
		malformedFDs("name with DEL", fdsValue("we%7Fb,4,tcp,%3A80"), 0, "control character"),
		malformedFDs("name with C1 control", fdsValue("we%C2%85b,4,tcp,%3A80"), 0, "control character"),
		malformedFDs("name invalid UTF-8", fdsValue("we%FFb,4,tcp,%3A80"), 0, "not valid UTF-8"),
		malformedFDs("name bad escape", fdsValue("we%zzb,4,tcp,%3A80"), 0, "name: invalid URL escape"),
		malformedFDs("name too long", fdsValue(strings.Repeat("n", MaxNameLen+1)+",4,tcp,%3A80"), 0,
			fmt.Sprintf("name is %d bytes, more than %d", MaxNameLen+1, MaxNameLen)),

		malformedFDs("unknown network", fdsValue("web,4,sctp,%3A80"), 0, `unknown network "sctp"`),
		malformedFDs("network upper case", fdsValue("web,4,TCP,%3A80"), 0, `unknown network "TCP"`),
		malformedFDs("network empty", fdsValue("web,4,,%3A80"), 0, `unknown network ""`),
		malformedFDs("network unixgram", fdsValue("web,4,unixgram,%2Fs"), 0, `unknown network "unixgram"`),
		malformedFDs("address empty", fdsValue("web,4,tcp,"), 0, `bad address ""`),
		malformedFDs("address with NUL", fdsValue("web,4,unix,%2Fa%00b"), 0, `bad address "%2Fa%00b"`),
		malformedFDs("address bad escape", fdsValue("web,4,unix,%2"), 0, `bad address "%2"`),
		malformedFDs("three parts", fdsValue("web,4,tcp"), 0, "3 comma-separated parts, want 4"),
		malformedFDs("five parts", fdsValue("web,4,tcp,%3A80,x"), 0, "5 comma-separated parts, want 4"),
		malformedFDs("raw comma in address", fdsValue("ok,4,tcp,%3A80", "ctl,5,unix,/a,b"), 1, "5 comma-separated parts, want 4"),
		malformedFDs("empty fd field", fdsValue(""), 0, "1 comma-separated parts, want 4"),

		malformedFDs("too many entries", manyEntries(10000), -1, fmt.Sprintf("10000 entries, more than %d", MaxEntries)),
		malformedFDs("one more than MaxEntries", manyEntries(MaxEntries+1), -1, fmt.Sprintf("more than %d", MaxEntries)),
		malformedFDs("longer than MaxValueLen", fdsValue("web,4,unix,"+strings.Repeat("a", MaxValueLen)), -1,
			fmt.Sprintf("more than %d", MaxValueLen)),

		{name: "duplicate fd", env: fdsOnly(fdsValue("a,4,tcp,%3A80", "b,5,tcp,%3A81", "c,4,tcp,%3A82")),
			wantErr: ErrDuplicate, wantVar: EnvFDs, wantEntry: 2, wantMsg: "fd 4 already named by entry 0"},
		// Fds that only increase are checked without a map: one that
		// repeats the fd before it does not increase.
		{name: "duplicate fd, one after the other", env: fdsOnly(fdsValue("a,4,tcp,%3A80", "b,5,tcp,%3A81", "c,5,tcp,%3A82")),
			wantErr: ErrDuplicate, wantVar: EnvFDs, wantEntry: 2, wantMsg: "fd 5 already named by entry 1"},
		{name: "duplicate name", env: fdsOnly(fdsValue("a,4,tcp,%3A80", "a,5,tcp,%3A81")),
			wantErr: ErrDuplicate, wantVar: EnvFDs, wantEntry: 1, wantMsg: `name "a" already used by entry 0`},
		{name: "duplicate name after unescaping", env: fdsOnly(fdsValue("a+b,4,tcp,%3A80", "a%20b,5,tcp,%3A81")),
			wantErr: ErrDuplicate, wantVar: EnvFDs, wantEntry: 1, wantMsg: `name "a b" already used by entry 0`},
	}
	runDecodeCases(t, tests)
}

func TestDecodeSystemd(t *testing.T) {
	sd := func(pid, fds string, names ...string) map[string]string {
		env := map[string]string{EnvListenPID: pid, EnvListenFDs: fds}
		if len(names) > 0 {
			env[EnvListenFDNames] = names[0]
		}
		return env
	}
	me := strconv.Itoa(testPID)
	bad := func(name string, env map[string]string, variable string, entry int, msg string) decodeCase {
		return decodeCase{name: name, env: env, wantErr: ErrMalformed, wantVar: variable, wantEntry: entry, wantMsg: msg}
	}
	tests := []decodeCase{
		{name: "names absent", env: sd(me, "2"), want: &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1,
			Entries: []Entry{{FD: 3}, {FD: 4}}}},
		{name: "names present", env: sd(me, "3", "web:web:ctl"), want: &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1,
			Entries: []Entry{{Name: "web", FD: 3}, {Name: "web", FD: 4}, {Name: "ctl", FD: 5}}}},
		{name: "zero fds", env: sd(me, "0"), want: &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1}},
		{name: "zero fds, empty names", env: sd(me, "0", ""), want: &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1}},
		{name: "exactly MaxEntries", env: sd(me, strconv.Itoa(MaxEntries)), want: func() *Env {
			e := &Env{Source: EnvListenFDs, Generation: 1, ReadyFD: -1}
			for i := range MaxEntries {
				e.Entries = append(e.Entries, Entry{FD: ListenFDsStart + i})
			}
			return e
		}()},
		{name: "LISTEN_PID of another process", env: sd("4242", "2", "a:b")},
		{name: "LISTEN_PID of the parent", env: sd(strconv.Itoa(testPPID), "1")},
		{name: "another process, even if malformed", env: sd("4242", "many", "::")},

		bad("LISTEN_FDS without LISTEN_PID", map[string]string{EnvListenFDs: "1"}, EnvListenPID, -1, "missing while LISTEN_FDS is set"),
		bad("LISTEN_PID non-numeric", sd("self", "1"), EnvListenPID, -1, `"self" is not a decimal number`),
		bad("LISTEN_PID zero", sd("0", "1"), EnvListenPID, -1, "0 is less than 1"),
		bad("LISTEN_FDS non-numeric", sd(me, "two"), EnvListenFDs, -1, `"two" is not a decimal number`),
		bad("LISTEN_FDS empty", sd(me, ""), EnvListenFDs, -1, `"" is not a decimal number`),
		bad("LISTEN_FDS negative", sd(me, "-1"), EnvListenFDs, -1, "-1 is less than 0"),
		bad("LISTEN_FDS leading zero", sd(me, "01"), EnvListenFDs, -1, `"01" is not a decimal number`),
		bad("LISTEN_FDS overflow", sd(me, "99999999999"), EnvListenFDs, -1, `"99999999999" is not a decimal number`),
		bad("LISTEN_FDS more than MaxEntries", sd(me, strconv.Itoa(MaxEntries+1)), EnvListenFDs, -1,
			fmt.Sprintf("%d fds, more than %d", MaxEntries+1, MaxEntries)),
		bad("too few names", sd(me, "2", "web"), EnvListenFDNames, -1, "1 names for LISTEN_FDS=2"),
		bad("too many names", sd(me, "1", "web:ctl"), EnvListenFDNames, -1, "2 names for LISTEN_FDS=1"),
		bad("empty names for one fd", sd(me, "1", ""), EnvListenFDNames, -1, "0 names for LISTEN_FDS=1"),
		bad("empty name", sd(me, "2", "web:"), EnvListenFDNames, 1, "empty name"),
		bad("control character in name", sd(me, "2", "web:c\x01tl"), EnvListenFDNames, 1, "control character"),
		bad("invalid UTF-8 name", sd(me, "1", "w\xffb"), EnvListenFDNames, 0, "not valid UTF-8"),
		bad("names longer than MaxValueLen", sd(me, "1", strings.Repeat("n", MaxValueLen+1)), EnvListenFDNames, -1,
			fmt.Sprintf("more than %d", MaxValueLen)),
	}
	runDecodeCases(t, tests)
}

func TestDecodeFDsWinsOverSystemd(t *testing.T) {
	systemd := map[string]string{EnvListenPID: strconv.Itoa(testPID), EnvListenFDs: "2", EnvListenFDNames: "a:b"}
	with := func(v string) map[string]string {
		env := map[string]string{EnvFDs: v}
		for k, val := range systemd {
			env[k] = val
		}
		return env
	}
	tests := []decodeCase{
		{name: "both good", env: with(fdsValue("web,4,tcp,%3A80")), want: &Env{Source: EnvFDs, Writer: testPPID,
			Generation: 2, ReadyFD: 3, Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		{name: "malformed TCPGRACE_FDS is not excused by systemd", env: with("v1;pid=100"),
			wantErr: ErrMalformed, wantVar: EnvFDs, wantEntry: -1, wantMsg: `field "gen" missing`},
		// A stale TCPGRACE_FDS hides systemd's variables too: Decode does
		// not fall back once TCPGRACE_FDS is set.
		{name: "TCPGRACE_FDS of another process", env: with("v1;pid=4242;gen=2;ready=3")},
		{name: "bad systemd variables are not read", env: map[string]string{EnvFDs: fdsValue(), EnvListenFDs: "x"},
			want: &Env{Source: EnvFDs, Writer: testPPID, Generation: 2, ReadyFD: 3}},
	}
	runDecodeCases(t, tests)
}

func runDecodeCases(t *testing.T, tests []decodeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(fakeLookup(tt.env), testPID, testPPID)
			if tt.wantErr == nil {
				require.NoError(t, err, "Decode must accept this environment")
				assert.Equal(t, tt.want, got, "Decode must return the inherited sockets in order")
				return
			}
			assert.Nil(t, got, "a failed Decode must return no *Env")
			assertDecodeError(t, err, tt.wantErr, tt.wantVar, tt.wantEntry, tt.wantMsg)
		})
	}
}

// assertDecodeError checks that err is a *DecodeError unwrapping to
// sentinel, naming variable and entry (-1: none) in its fields and its
// message, and that the message contains msg.
func assertDecodeError(t *testing.T, err, sentinel error, variable string, entry int, msg string) *DecodeError {
	t.Helper()
	require.Error(t, err, "want an error unwrapping to %v", sentinel)
	assert.ErrorIs(t, err, sentinel, "the error must unwrap to the sentinel")
	var derr *DecodeError
	require.ErrorAs(t, err, &derr, "the error must be a *DecodeError")
	assert.Equal(t, variable, derr.Var, "DecodeError.Var must name the variable")
	assert.Equal(t, entry, derr.Entry, "DecodeError.Entry must be the offending entry's index")
	assert.Contains(t, err.Error(), variable, "the message must name the variable")
	if entry >= 0 {
		assert.Contains(t, err.Error(), fmt.Sprintf("entry %d:", entry), "the message must name the entry index")
	} else {
		assert.NotContains(t, err.Error(), "entry ", "a whole-value error must not name an entry")
	}
	assert.Contains(t, err.Error(), msg, "the message must say why")
	assert.True(t, strings.HasPrefix(err.Error(), "inherit: "), "the message %q must start with inherit:", err)
	return derr
}

func TestEncodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		env  *Env
	}{
		{"no entries", &Env{Generation: 1, ReadyFD: 3}},
		{"older generations", &Env{Generation: 5, ReadyFD: 3, Older: []int{97, 98, 99},
			Entries: []Entry{{Name: "web", FD: 4, Network: "tcp", Address: ":80"}}}},
		{"pipe, kept and owned files", &Env{Generation: 3, ReadyFD: 3, Pipe: 1<<63 + 5, Keep: []string{"sd"},
			Owned: []UnixFile{{Name: "a:b,c;d%e f", FileID: sockfd.FileID{Dev: 1<<64 - 1, Ino: 1}}, {Name: "ctl", FileID: sockfd.FileID{Dev: 0, Ino: 42}}},
			Entries: []Entry{
				{Name: "a:b,c;d%e f", FD: 4, Network: "unix", Address: "/run/a.sock"},
				{Name: "ctl", FD: 5, Network: "unix", Address: "/run/ctl.sock"},
				{Name: "sd", FD: 6, Network: "unix", Address: "/run/sd.sock"},
			}}},
		{"tricky strings", &Env{Generation: 7, ReadyFD: 3, Entries: []Entry{
			{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:8080"},
			{Name: "v6", FD: 5, Network: "tcp6", Address: "[::1]:8080"},
			{Name: "zone", FD: 6, Network: "udp6", Address: "[fe80::1%eth0]:53"},
			{Name: "ctl", FD: 7, Network: "unix", Address: "/run/a,b;c%d e+f=g&h.sock"},
			{Name: "a,b;c%d e+f=g", FD: 8, Network: "unix", Address: "@abstract"},
			{Name: "名前 ünïcode", FD: 9, Network: "udp", Address: ":0"},
			{Name: strings.Repeat("x", MaxNameLen), FD: 1 << 30, Network: "tcp4", Address: "0.0.0.0:1"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.env.Encode(testPPID)
			assert.NotContains(t, strings.Join(strings.Split(v, ";fd=")[1:], ""), ";",
				"escaped entries must contain no raw ';'")
			got, err := Decode(fakeLookup(fdsOnly(v)), testPID, testPPID)
			require.NoError(t, err, "Decode must accept what Encode wrote: %q", v)
			want := *tt.env
			want.Source, want.Writer = EnvFDs, testPPID
			assert.Equal(t, &want, got, "Decode(Encode(env)) must give env back")
		})
	}
}

func TestEncodeFormat(t *testing.T) {
	env := &Env{Generation: 2, ReadyFD: 3, Entries: []Entry{
		{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:8080"},
		{Name: "ctl", FD: 5, Network: "unix", Address: "/run/ctl.sock"},
	}}
	assert.Equal(t,
		"v1;pid=4242;gen=2;ready=3;fd=web,4,tcp,127.0.0.1:8080;fd=ctl,5,unix,/run/ctl.sock",
		env.Encode(4242), "Encode must write the format documented in doc.go")
	env.Generation, env.Older = 4, []int{4000, 4100}
	assert.Equal(t,
		"v1;pid=4242;gen=4;ready=3;older=4000,4100;fd=web,4,tcp,127.0.0.1:8080;fd=ctl,5,unix,/run/ctl.sock",
		env.Encode(4242), "Encode must write older pids after ready, as documented in env.go")
	env.Older = []int{}
	assert.NotContains(t, env.Encode(4242), "older", "an empty Older must not be written")
	env.Generation, env.Pipe, env.Owned = 2, 777, []UnixFile{{Name: "ctl", FileID: sockfd.FileID{Dev: 2049, Ino: 1234}}}
	assert.Equal(t,
		"v1;pid=4242;gen=2;ready=3;pipe=777;owned=ctl:2049:1234;fd=web,4,tcp,127.0.0.1:8080;fd=ctl,5,unix,/run/ctl.sock",
		env.Encode(4242), "Encode must write pipe after ready and owned after keep, as documented in env.go")
}

// TestDecodeProbesPipe: with a probe of the readiness pipe (as Take has),
// a value that names its pipe is honoured by the process holding that
// pipe, whether its parent wrote the value or the writer is gone (nobody
// reads the pipe any more); one that still has a reader, not written by
// the parent, is a grandchild's stale copy; and a value without a pipe
// inode is judged by the pid alone.
func TestDecodeProbesPipe(t *testing.T) {
	value := func(writer int, pipe bool) string {
		v := fmt.Sprintf("v1;pid=%d;gen=2;ready=3", writer)
		if pipe {
			v += ";pipe=777"
		}
		return v + ";fd=web,4,tcp,%3A80"
	}
	tests := []struct {
		name           string
		writer         int
		pipe           bool
		same, noReader bool
		ours           bool
	}{
		{"the parent's, on its pipe", testPPID, true, true, false, true},
		{"the parent's, on its pipe, reader gone meanwhile", testPPID, true, true, true, true},
		{"the parent's, on another fd", testPPID, true, false, false, false},
		{"a dead writer's, on its pipe nobody reads", 4242, true, true, true, true},
		{"a live writer's, on its pipe: a grandchild", 4242, true, true, false, false},
		{"another writer's, on another fd", 4242, true, false, true, false},
		{"no pipe inode, the parent's", testPPID, false, false, false, true},
		{"no pipe inode, a dead writer's", 4242, false, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probed := false
			probe := func(fd int, ino uint64) (bool, bool) {
				probed = true
				assert.Equal(t, 3, fd, "the probe must look at the ready fd")
				assert.Equal(t, uint64(777), ino, "the probe must look for the pipe inode written")
				return tt.same, tt.noReader
			}
			got, err := decode(fakeLookup(fdsOnly(value(tt.writer, tt.pipe))), testPID, testPPID, probe)
			require.NoError(t, err, "a well-formed value is no error, ours or not")
			assert.Equal(t, tt.pipe, probed, "the pipe is probed exactly when the value names one")
			if !tt.ours {
				assert.Nil(t, got, "a value that is not ours must be ignored")
				return
			}
			require.NotNil(t, got, "the value is ours")
			assert.Equal(t, tt.writer, got.Writer, "the writer stays the one written")
		})
	}
}

// TestDecodeMaxEntriesWithOlder is a regression test for a bug: decodeFDs counts entries as
// len(fields)-4, assuming the three header fields pid, gen and ready, so
// an optional older field counts as an entry and a value that Encode
// writes for exactly MaxEntries sockets plus older pids is rejected.
func TestDecodeMaxEntriesWithOlder(t *testing.T) {
	env := &Env{Generation: 3, ReadyFD: 3, Older: []int{90}}
	for i := range MaxEntries {
		env.Entries = append(env.Entries, Entry{Name: fmt.Sprintf("s%d", i), FD: 4 + i, Network: "tcp", Address: ":80"})
	}
	got, err := Decode(fakeLookup(fdsOnly(env.Encode(testPPID))), testPID, testPPID)
	require.NoError(t, err, "Decode must accept MaxEntries entries with an older field")
	assert.Len(t, got.Entries, MaxEntries, "every entry must be decoded")
}

// TestDecodeReadyFDAsSocket is a regression test for a bug: checkUnique's comment promises to
// reject "a ready fd reused as a socket", but it never looks at ReadyFD,
// so ready=4 with an entry on fd 4 decodes without error.
func TestDecodeReadyFDAsSocket(t *testing.T) {
	_, err := Decode(fakeLookup(fdsOnly("v1;pid=100;gen=2;ready=4;fd=web,4,tcp,%3A80")), testPID, testPPID)
	assertDecodeError(t, err, ErrDuplicate, EnvFDs, 0, "fd 4")
}

func TestDecodeErrorMessage(t *testing.T) {
	whole := &DecodeError{Var: EnvFDs, Entry: -1, Reason: "why", Err: ErrMalformed}
	one := &DecodeError{Var: EnvListenFDNames, Entry: 3, Reason: "why", Err: ErrDuplicate}
	assert.Equal(t, "inherit: TCPGRACE_FDS: why", whole.Error(), "a whole-value error names the variable only")
	assert.Equal(t, "inherit: LISTEN_FDNAMES: entry 3: why", one.Error(), "an entry error names the variable and the entry")
	assert.ErrorIs(t, fmt.Errorf("wrapped: %w", one), ErrDuplicate, "a wrapped DecodeError must still unwrap to its sentinel")
	assert.False(t, errors.Is(whole, ErrDuplicate), "a DecodeError must unwrap to its own sentinel only")
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"web", "a b", "名前", "a,b;c%d", strings.Repeat("x", MaxNameLen)} {
		assert.NoError(t, CheckName(name), "%q is a valid name", name)
	}
	for _, name := range []string{"", "a\x00b", "a\tb", "a\x7fb", "\xff", strings.Repeat("x", MaxNameLen+1)} {
		assert.Error(t, CheckName(name), "%q is not a valid name", name)
	}
}

// TestCheckFDName: the names that may go into LISTEN_FDNAMES are the
// ones systemd takes in FileDescriptorName=, a subset of CheckName's.
func TestCheckFDName(t *testing.T) {
	for _, name := range []string{"web", "tcp-2", "a.b_c@d=e!~", strings.Repeat("x", MaxNameLen)} {
		assert.NoError(t, CheckFDName(name), "%q is a valid name", name)
		assert.NoError(t, CheckName(name), "%q is valid for CheckName too", name)
	}
	for _, c := range []struct{ name, err string }{
		{"", "a name is 1 to 255 characters, not 0"},
		{strings.Repeat("x", MaxNameLen+1), "a name is 1 to 255 characters, not 256"},
		{"a:b", `name "a:b": only printable ASCII without spaces or ':'`},
		{"a b", "without spaces"},
		{"a\tb", "without spaces"},
		{"a\x7fb", "only printable ASCII"},
		{"名前", "only printable ASCII"},
		{"\xff", "only printable ASCII"},
	} {
		err := CheckFDName(c.name)
		if assert.Error(t, err, "%q is not a valid name", c.name) {
			assert.Contains(t, err.Error(), c.err, "%q", c.name)
		}
	}
}

func TestKnownNetwork(t *testing.T) {
	for _, n := range []string{"tcp", "tcp4", "tcp6", "unix", "udp", "udp4", "udp6"} {
		assert.True(t, KnownNetwork(n), "%s must be known", n)
	}
	for _, n := range []string{"", "ip", "unixgram", "unixpacket", "TCP", "tcp5", "udp46"} {
		assert.False(t, KnownNetwork(n), "%q must be unknown", n)
	}
	assert.True(t, IsPacket("udp6"), "udp6 is a packet network")
	assert.False(t, IsPacket("tcp"), "tcp is not a packet network")
	assert.False(t, IsPacket("unix"), "unix (stream) is not a packet network")
}

func TestSameFamily(t *testing.T) {
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"tcp4", "tcp", true}, {"tcp6", "tcp", true}, {"tcp4", "tcp4", true}, {"tcp", "tcp", true},
		{"tcp6", "tcp4", false}, {"tcp4", "tcp6", false}, {"tcp", "tcp4", false},
		{"udp4", "udp", true}, {"udp6", "udp6", true}, {"udp4", "tcp", false}, {"tcp4", "udp", false},
		{"unix", "unix", true}, {"unix", "tcp", false}, {"tcp4", "unix", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.ok, sameFamily(tt.have, tt.want), "sameFamily(have %s, want %s)", tt.have, tt.want)
	}
}

func TestSameAddr(t *testing.T) {
	tests := []struct {
		have, network, want string
		ok                  bool
	}{
		{"127.0.0.1:80", "tcp", "127.0.0.1:80", true},
		{"127.0.0.1:80", "tcp", "127.0.0.1:81", false},
		{"127.0.0.1:80", "tcp", "127.0.0.2:80", false},
		{"127.0.0.1:80", "tcp", "localhost:80", false}, // names are not resolved
		{"0.0.0.0:80", "tcp", ":80", true},
		{"0.0.0.0:80", "tcp", "0.0.0.0:80", true},
		{"[::]:80", "tcp", ":80", true},
		{"[::]:80", "tcp", "0.0.0.0:80", true},
		{"127.0.0.1:80", "tcp", ":80", false},
		{"[::1]:80", "tcp6", "[::1]:80", true},
		{"[::ffff:127.0.0.1]:80", "tcp", "127.0.0.1:80", true},
		{"127.0.0.1:80", "tcp", "bad", false},
		{"/run/a.sock", "unix", "/run/a.sock", true},
		{"/run/a.sock", "unix", "/run/b.sock", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.ok, sameAddr(Entry{Address: tt.have}, tt.network, tt.want),
			"sameAddr(socket on %s, %s %s)", tt.have, tt.network, tt.want)
	}
}

// TestEscapedEntriesRoundTrip: names and addresses with every byte the
// value's syntax uses come back from Decode as they went in, and a value
// written by an earlier build, which escaped as url.QueryEscape does,
// decodes to the same entries.
func TestEscapedEntriesRoundTrip(t *testing.T) {
	env := &Env{Source: EnvFDs, Writer: 100, Generation: 2, ReadyFD: 3, Entries: []Entry{
		{Name: "a,b;c=d%e+f g", FD: 4, Network: "unix", Address: "/tmp/x,y;z=%+ é.sock"},
		{Name: "web", FD: 5, Network: "tcp6", Address: "[::1]:8080"},
	}}
	value := env.Encode(100)
	assert.NotContains(t, value, "%3A", "':' needs no escape")
	got, err := Decode(func(k string) (string, bool) { return value, k == EnvFDs }, 1, 100)
	require.NoError(t, err)
	assert.Equal(t, env.Entries, got.Entries, "Decode(Encode(env)) gives the entries back")

	old := "v1;pid=100;gen=2;ready=3;fd=a%2Cb%3Bc%3Dd%25e%2Bf+g,4,unix,%2Ftmp%2Fx%2Cy%3Bz%3D%25%2B+%C3%A9.sock;fd=web,5,tcp6,%5B%3A%3A1%5D%3A8080"
	got, err = Decode(func(k string) (string, bool) { return old, k == EnvFDs }, 1, 100)
	require.NoError(t, err, "an earlier build's value")
	assert.Equal(t, env.Entries, got.Entries, "an earlier build's value gives the same entries")

	allocs := testing.AllocsPerRun(20, func() {
		parseEntry("web,5,tcp6,[::1]:8080", 0)
	})
	assert.Zero(t, allocs, "an entry with nothing escaped decodes without allocating")
}
