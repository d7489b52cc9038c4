//go:build linux

package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Take reads this process's environment once per process, so it is
// tested in re-executed copies of the test binary: TestMain runs a helper
// instead of the tests when helperEnv names one.
const helperEnv = "INHERIT_TEST_HELPER"

const (
	// helperTake calls Take and prints a takeReport as JSON.
	helperTake = "take"
	// helperStale re-executes the test binary as helperTake with its own
	// environment and fds 3 and 4, so that a grandchild of the writer
	// calls Take on the writer's value.
	helperStale = "stale"
)

// acceptEnv tells helperTake to accept one connection on the listener it
// claims and write greeting on it.
const acceptEnv = "INHERIT_TEST_ACCEPT"

// greeting is what the helper writes on the connection it accepts on the
// inherited listener.
const greeting = "hello from the child"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); mode {
	case "":
		goleak.VerifyTestMain(m) // runs the tests; fails on a goroutine left behind
	case helperTake:
		rep := takeHelper()
		if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case helperStale:
		os.Exit(staleHelper())
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
		os.Exit(2)
	}
}

// takeReport is what a helper saw: everything a test asserts on.
type takeReport struct {
	TakeErr     string
	Malformed   bool     // errors.Is(err, ErrMalformed)
	BadFD       bool     // errors.Is(err, ErrBadFD)
	DecodeError bool     // errors.As(err, *DecodeError)
	EnvLeft     []string // inherit variables still set after Take
	SecondTaken bool     // a second Take returned (nil, ErrTaken)
	Source      string
	Generation  int
	Older       []int
	HasParent   bool
	Unclaimed   []Entry
	Addr        string // the claimed listener's address
	Accepted    string // error accepting on it, or "ok"
	// GrandchildFDs are the fds open in a shell started after Take and
	// the claim, before Ready.
	GrandchildFDs []int
	ReadyErr      string
}

func takeHelper() takeReport {
	var rep takeReport
	f, err := Take()
	for _, k := range []string{EnvFDs, EnvListenPID, EnvListenFDs, EnvListenFDNames} {
		if _, ok := os.LookupEnv(k); ok {
			rep.EnvLeft = append(rep.EnvLeft, k)
		}
	}
	second, err2 := Take()
	rep.SecondTaken = second == nil && errors.Is(err2, ErrTaken)
	if err != nil {
		var derr *DecodeError
		rep.TakeErr, rep.DecodeError = err.Error(), errors.As(err, &derr)
		rep.Malformed, rep.BadFD = errors.Is(err, ErrMalformed), errors.Is(err, ErrBadFD)
		return rep
	}
	rep.Source, rep.Generation, rep.HasParent = f.Source(), f.Generation(), f.HasParent()
	rep.Older = f.Older()
	rep.Unclaimed = f.Unclaimed()
	ln, err := f.Listener("web", "tcp", "127.0.0.1:0")
	if err != nil {
		rep.Accepted = err.Error()
	} else if ln != nil {
		defer ln.Close()
		rep.Addr = ln.Addr().String()
		if os.Getenv(acceptEnv) != "" {
			rep.Accepted = greet(ln)
		}
	}
	rep.GrandchildFDs, err = shellFDs()
	if err != nil {
		rep.ReadyErr = err.Error()
		return rep
	}
	if err := f.Ready(); err != nil {
		rep.ReadyErr = err.Error()
	}
	return rep
}

// greet accepts the connection the test queued on ln and writes greeting.
func greet(ln net.Listener) string {
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
	c, err := ln.Accept()
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	if _, err := io.WriteString(c, greeting); err != nil {
		return err.Error()
	}
	return "ok"
}

// needShell skips the test unless /bin/sh runs and finds ls, which
// shellFDs needs.
func needShell(t *testing.T) {
	t.Helper()
	if err := exec.Command("/bin/sh", "-c", "command -v ls").Run(); err != nil {
		t.Skipf("needs /bin/sh with ls: %v", err)
	}
}

// shellFDs lists the fds a shell started now inherits. The shell lists
// its own fds ($$), so ls's directory fd is not among them.
func shellFDs() ([]int, error) {
	out, err := exec.Command("/bin/sh", "-c", "ls /proc/$$/fd; exit 0").Output()
	if err != nil {
		return nil, fmt.Errorf("listing a grandchild's fds: %w", err)
	}
	var fds []int
	for _, s := range strings.Fields(string(out)) {
		fd, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("listing a grandchild's fds: %q", out)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func staleHelper() int {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+helperTake) // the later value wins
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "ready"), os.NewFile(4, "web")}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "helper: grandchild:", err)
		return 1
	}
	return 0
}

// childResult is a helper's report and what it wrote to the readiness pipe.
type childResult struct {
	takeReport
	Pipe string
}

// runChild runs cmd, a helper, with env added to our own environment
// minus any inherit variables. With pipe set, fd 3 is the write end of a
// readiness pipe and extra follows from fd 4; else extra starts at fd 3.
func runChild(t *testing.T, cmd *exec.Cmd, env []string, pipe bool, extra ...*os.File) childResult {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err, "creating the readiness pipe")
	defer r.Close()
	if pipe {
		extra = append([]*os.File{w}, extra...)
	}
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case EnvFDs, EnvListenPID, EnvListenFDs, EnvListenFDNames, helperEnv, acceptEnv:
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The race detector sleeps a second at exit unless told not to.
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = extra
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	w.Close()
	require.NoError(t, err, "the helper must exit 0; stderr:\n%s", &stderr)
	var res childResult
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res.takeReport), "the helper must print its report: %q", &stdout)
	require.NoError(t, r.SetReadDeadline(time.Now().Add(ioTimeout)), "setting a read deadline")
	res.Pipe = readAll(t, r)
	return res
}

func helperCmd(t *testing.T, mode string) (*exec.Cmd, []string) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, os.Args[0], "-test.run=^$"), []string{helperEnv + "=" + mode}
}

// olderPIDs are the two older generations handOff names: pids near the
// largest Linux allows (4194304), which no test process here has, so that
// Older's dropping of the parent's pid never drops one of them (a fresh
// machine once gave the test process pid 4343, one of the earlier values).
var olderPIDs = []int{4194301, 4194302}

// handOff is the hand-off the tests write: the readiness pipe at fd 3,
// web at fd 4 and spare at fd 5, and two older generations.
func handOff() *Env {
	return &Env{Generation: 4, ReadyFD: 3, Older: olderPIDs, Entries: []Entry{
		{Name: "web", FD: 4, Network: "tcp", Address: "127.0.0.1:0"},
		{Name: "spare", FD: 5, Network: "tcp", Address: "127.0.0.1:0"},
	}}
}

// listenerFile is a close-on-exec duplicate of a new loopback listener, as
// an *os.File to pass in ExtraFiles; it is closed when the test ends.
func listenerFile(t *testing.T, name string) (*os.File, net.Listener) {
	t.Helper()
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	f := os.NewFile(uintptr(dupFD(t, ln.(syscall.Conn))), name)
	t.Cleanup(func() { f.Close() })
	return f, ln
}

// queueConn connects to ln without anyone accepting yet; the child will.
func queueConn(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
	require.NoError(t, err, "queueing a connection on the listener")
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)), "setting a deadline")
	return c
}

func TestTake(t *testing.T) {
	needShell(t) // the helper lists a grandchild's fds before Ready
	web, ln := listenerFile(t, "web")
	spare, _ := listenerFile(t, "spare")
	conn := queueConn(t, ln)
	cmd, env := helperCmd(t, helperTake)
	env = append(env, acceptEnv+"=1", EnvFDs+"="+handOff().Encode(os.Getpid()))
	res := runChild(t, cmd, env, true, web, spare)

	require.Empty(t, res.TakeErr, "Take in a direct child of the writer must succeed")
	assert.Empty(t, res.EnvLeft, "Take must remove TCPGRACE_FDS from the environment")
	assert.Equal(t, EnvFDs, res.Source, "the sockets must come from TCPGRACE_FDS")
	assert.Equal(t, 4, res.Generation, "the generation must be the one written")
	assert.Equal(t, append([]int{os.Getpid()}, olderPIDs...), res.Older, "Older must list the parent, then the pids it wrote")
	assert.True(t, res.HasParent, "a ready fd means a parent waits")
	assert.Equal(t, handOff().Entries, res.Unclaimed, "both entries must be inherited")
	assert.Equal(t, ln.Addr().String(), res.Addr, "the claimed listener must be the one handed on")
	assert.Equal(t, "ok", res.Accepted, "the child must accept on the inherited listener")
	b, err := io.ReadAll(conn)
	assert.NoError(t, err, "reading the child's greeting")
	assert.Equal(t, greeting, string(b), "the queued connection must have been served by the child")
	assert.Empty(t, res.ReadyErr, "Ready must succeed")
	assert.Equal(t, string(rune(ReadyByte)), res.Pipe, "the parent must read exactly ReadyByte, then EOF")
}

func TestTakeTwice(t *testing.T) {
	web, _ := listenerFile(t, "web")
	spare, _ := listenerFile(t, "spare")
	cmd, env := helperCmd(t, helperTake)
	res := runChild(t, cmd, append(env, EnvFDs+"="+handOff().Encode(os.Getpid())), true, web, spare)
	require.Empty(t, res.TakeErr, "the first Take must succeed")
	assert.True(t, res.SecondTaken, "a second Take in one process must return (nil, ErrTaken)")

	cmd, env = helperCmd(t, helperTake)
	res = runChild(t, cmd, env, true)
	require.Empty(t, res.TakeErr, "a first start must not be an error")
	assert.True(t, res.SecondTaken, "a second Take must return ErrTaken on a first start too")
}

func TestTakeFirstStart(t *testing.T) {
	cmd, env := helperCmd(t, helperTake)
	res := runChild(t, cmd, env, true)
	assert.Empty(t, res.TakeErr, "nothing inherited is not an error")
	assert.Empty(t, res.Source, "nothing inherited has no source")
	assert.Equal(t, 1, res.Generation, "a first start is generation 1")
	assert.False(t, res.HasParent, "a first start has no parent")
	assert.Empty(t, res.Addr, "a first start inherits no listener")
	assert.Empty(t, res.Pipe, "a first start must not write to fd 3")
}

func TestTakeCloseOnExec(t *testing.T) {
	needShell(t)
	web, _ := listenerFile(t, "web")
	spare, _ := listenerFile(t, "spare")
	cmd, env := helperCmd(t, helperTake)
	res := runChild(t, cmd, append(env, EnvFDs+"="+handOff().Encode(os.Getpid())), true, web, spare)
	require.Empty(t, res.TakeErr, "Take must succeed")
	require.NotEmpty(t, res.GrandchildFDs, "the grandchild must list its fds")
	assert.Contains(t, res.GrandchildFDs, 1, "the listing must include stdout")
	for _, fd := range []int{3, 4, 5} { // ready, claimed web, unclaimed spare
		assert.NotContains(t, res.GrandchildFDs, fd,
			"inherited fd %d must be close-on-exec after Take", fd)
	}
}

func TestTakeStaleInGrandchild(t *testing.T) {
	web, _ := listenerFile(t, "web")
	cmd, env := helperCmd(t, helperStale)
	value := (&Env{Generation: 2, ReadyFD: 3, Entries: handOff().Entries[:1]}).Encode(os.Getpid())
	res := runChild(t, cmd, append(env, EnvFDs+"="+value), true, web)
	assert.Empty(t, res.TakeErr, "a stale value is not an error")
	assert.Empty(t, res.EnvLeft, "Take must remove a stale TCPGRACE_FDS too")
	assert.Empty(t, res.Source, "a grandchild must not inherit through its grandparent's value")
	assert.Equal(t, 1, res.Generation, "a grandchild with a stale value starts as generation 1")
	assert.Empty(t, res.Older, "a stale value names no older generations")
	assert.False(t, res.HasParent, "a stale ready fd must not be taken as a parent")
	assert.Empty(t, res.Unclaimed, "a stale value names no sockets")
	assert.Empty(t, res.Addr, "a stale value gives no listener")
	assert.Empty(t, res.Pipe, "the grandchild must not write to its grandparent's pipe")
}

func TestTakeSystemd(t *testing.T) {
	needShell(t)
	web, ln := listenerFile(t, "web")
	spare, sln := listenerFile(t, "spare")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	// systemd sets LISTEN_PID to the service's own pid; a shell that
	// execs the helper knows it as $$.
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" -test.run='^$'`, os.Args[0])
	res := runChild(t, cmd, []string{helperEnv + "=" + helperTake, EnvListenFDs + "=2", EnvListenFDNames + "=web:spare"},
		false, web, spare)
	require.Empty(t, res.TakeErr, "Take must accept socket activation")
	assert.Empty(t, res.EnvLeft, "Take must remove LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES")
	assert.Equal(t, EnvListenFDs, res.Source, "the sockets must come from LISTEN_FDS")
	assert.Equal(t, 1, res.Generation, "a socket-activated process is generation 1")
	assert.Empty(t, res.Older, "systemd hands on no older generations")
	assert.False(t, res.HasParent, "systemd waits on no readiness pipe")
	assert.Equal(t, []Entry{
		{Name: "web", FD: 3, Network: "tcp4", Address: ln.Addr().String()},
		{Name: "spare", FD: 4, Network: "tcp4", Address: sln.Addr().String()},
	}, res.Unclaimed, "Take must read network and address off systemd's sockets")
	assert.Equal(t, ln.Addr().String(), res.Addr, "web must be claimed by name")
	require.Empty(t, res.ReadyErr, "the helper must list a grandchild's fds and say ready")
	require.Contains(t, res.GrandchildFDs, 1, "the grandchild's fd list must include stdout")
	for _, fd := range []int{3, 4} {
		assert.NotContains(t, res.GrandchildFDs, fd, "systemd's fd %d must be close-on-exec after Take", fd)
	}
}

func TestTakeMalformed(t *testing.T) {
	web, _ := listenerFile(t, "web")
	cmd, env := helperCmd(t, helperTake)
	value := fmt.Sprintf("v1;pid=%d;gen=2;ready=3;fd=web,4,bogus,127.0.0.1%%3A0", os.Getpid())
	res := runChild(t, cmd, append(env, EnvFDs+"="+value), true, web)
	require.NotEmpty(t, res.TakeErr, "Take must fail on a malformed value")
	assert.True(t, res.Malformed, "the error must unwrap to ErrMalformed: %s", res.TakeErr)
	assert.True(t, res.DecodeError, "the error must be a *DecodeError: %s", res.TakeErr)
	assert.Contains(t, res.TakeErr, `TCPGRACE_FDS: entry 0: name "web": unknown network "bogus"`, "the error must say what is wrong")
	assert.Empty(t, res.EnvLeft, "Take must remove a malformed TCPGRACE_FDS too")
	assert.True(t, res.SecondTaken, "a failed Take still counts as the one Take")

	assert.Equal(t, string(rune(FailByte))+res.TakeErr, res.Pipe,
		"the parent must read FailByte and Take's error from the readiness pipe")
}

func TestTakeBadFD(t *testing.T) {
	regular, err := os.CreateTemp(t.TempDir(), "regular")
	require.NoError(t, err, "creating a regular file")
	t.Cleanup(func() { regular.Close() })
	cmd, env := helperCmd(t, helperTake)
	value := (&Env{Generation: 2, ReadyFD: 3, Entries: handOff().Entries[:1]}).Encode(os.Getpid())
	res := runChild(t, cmd, append(env, EnvFDs+"="+value), true, regular)
	require.NotEmpty(t, res.TakeErr, "Take must fail when an fd is not a socket")
	assert.True(t, res.BadFD, "the error must unwrap to ErrBadFD: %s", res.TakeErr)
	assert.True(t, res.DecodeError, "the error must be a *DecodeError: %s", res.TakeErr)
	assert.Contains(t, res.TakeErr, `entry 0: name "web" fd 4: not a socket`, "the error must name entry, name and fd")
	assert.Equal(t, string(rune(FailByte))+res.TakeErr, res.Pipe,
		"the parent must read FailByte and Take's error from the readiness pipe")
}
