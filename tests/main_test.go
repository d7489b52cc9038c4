// Package tests holds end-to-end tests: real lineserver processes on
// loopback and Unix sockets, upgraded by real signals under real client
// load. Availability is part of correctness: every request is held to
// requestBudget (1 s for connect and reply), and every upgrade deploys a
// build of another version and checks that the new generation runs it.
package tests

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// roleEnv makes the test binary play a server generation instead of
// running tests: the rollback tests put a copy of it where lineserver's
// next generation is expected.
const roleEnv = "TCPGRACE_E2E_ROLE"

// binDir holds the examples of builtHere and the command, built once for all tests in
// each of versions (binDir/VERSION/NAME); lineserverBin is the reference
// server among them, in the first version.
var binDir, lineserverBin string

// versions are the builds of every example, the same source with the
// version stamped in (-ldflags "-X main.version=..."), which each logs at
// start ("msg=start pid=N version=V"). A server starts on the first; each
// upgrade deploys another one than its serving generation runs, so that a
// test can tell the new generation runs the file just deployed, not the
// old one again.
var versions = []string{"v1", "v2"}

// roleVersion is the version the test binary logs when it plays a
// generation (playRole): deployed in place of an example, it is a
// different build too.
const roleVersion = "e2e-role"

// Parallel tests. Most tests here spend their time waiting on processes
// (a drain or ready timeout, a grace, a process start) rather than on the
// CPU; those that call t.Parallel ("a waiting test") run together after
// all the others, up to 8 at once under make test. Each uses nothing but
// its own: processes, temp dirs, Unix sockets in them, loopback ports the
// kernel picked, and (the systemd ones) a systemd in namespaces of its
// own. None sets up client load, none sets the environment or the working
// directory, and none holds a process to a deadline tighter than a second
// while other tests compete for the CPU. Tests that measure loss under
// load, with each request held to requestBudget, and tests that time a
// short window (a sub-second drain, grace or reload, a sweep of fault
// timings) run alone, one after the other, as do the build tests, which
// are busy on the CPU. Two exceptions, for the suite's time: the interop
// cases run two at a time (inLane), as their clients count failures, not
// speed; and the two container tests run with the waiting tests, each
// with a dockerd of its own, their load's requestBudget (a second) far
// above a hand-off even on a busy machine. Executables are put in place
// with copyExecutable or writeExecutable, so that a parallel test's fork
// cannot make them "text file busy".

// exampleBin is the built example examples/name, in the first version.
func exampleBin(name string) string { return filepath.Join(binDir, versions[0], name) }

// builtHere are the packages TestMain builds in each version: every
// example these tests run and the command. examples/http3 is not among
// them (its own module's tests run it), and quic-go is a long link.
var builtHere = []string{"../examples/lineserver", "../examples/http", "../examples/grpc", "../examples/unix", "../cmd/..."}

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(playRole(role))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Orphaned generations are re-parented to us, so we can reap them and
	// read their exit status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "tests: PR_SET_CHILD_SUBREAPER:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tcpgrace-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	lineserverBin = exampleBin("lineserver")
	for _, v := range versions {
		out := filepath.Join(dir, v) + "/"
		build := exec.Command("go", append([]string{"build", "-ldflags", "-X main.version=" + v, "-o", out}, builtHere...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "tests: building the examples (%s): %v\n", v, err)
			return 1
		}
	}
	return m.Run()
}

// playRole runs this test binary, started with lineserver's arguments, as
// a generation that fails on purpose:
//
//	fail         reports a start-up failure to its parent
//	ready-crash  takes lineserver's sockets, writes the pid file, says
//	             ready, and dies of SIGKILL 200 ms later
//	ready-exit0  the same, but exits 0 at once (it left on purpose)
//	pid-crash    writes its pid into the pid file, then dies before
//	             saying ready
//
// and the roles of ownRoles.
func playRole(role string) int {
	// The start line every example writes, so that a test can tell this
	// build was run.
	slog.New(slog.NewTextHandler(os.Stderr, nil)).Info("start", "pid", os.Getpid(), "version", roleVersion, "role", role)
	if play := ownRoles[role]; play != nil {
		return play() // a role that builds its own Upgrader
	}
	args := lineserverArgs(os.Args[1:])
	u, err := tcpgrace.New(tcpgrace.Options{PIDFile: args["-pidfile"][0]})
	if err != nil {
		fmt.Fprintln(os.Stderr, "role:", err)
		return 1
	}
	switch role {
	case "fail":
		u.Fail(errors.New("e2e: refusing to start: config broken"))
		return 1
	case "ready-crash", "ready-exit0":
		for _, network := range []string{"tcp", "unix"} {
			for _, addr := range args["-"+network] {
				if _, err := u.Listen(network+":"+addr, network, addr); err != nil {
					u.Fail(err)
					return 1
				}
			}
		}
		u.Ready()
		if role == "ready-exit0" {
			return 0
		}
		time.Sleep(200 * time.Millisecond)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "pid-crash":
		os.WriteFile(args["-pidfile"][0], []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	fmt.Fprintln(os.Stderr, "role: unknown role", role)
	return 1
}

// lineserverArgs collects "-flag value" pairs.
func lineserverArgs(argv []string) map[string][]string {
	out := map[string][]string{}
	for i := 0; i+1 < len(argv); i += 2 {
		out[argv[i]] = append(out[argv[i]], argv[i+1])
	}
	if len(out["-pidfile"]) == 0 {
		out["-pidfile"] = []string{""}
	}
	return out
}
