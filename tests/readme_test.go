package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's Go code is tested, so that it cannot rot. Every ```go
// block in README.md carries a marker, an HTML comment on the line right
// before its fence (GitHub does not render it):
//
//	<!-- readme-test: program -->       a whole program, package main: built and run
//	<!-- readme-test: http-program -->  a whole HTTP program, package main: built and run
//	<!-- readme-test: fragment -->      statements that go in a program: compiled
//
// The program must take "-addr HOST:PORT" and "-pidfile PATH", write its
// pid file once it serves, answer every connection on addr with a line
// that contains its pid, upgrade on SIGUSR1 and drain on SIGTERM. The
// HTTP program does the same for GET / on addr, and takes
// "-ready-grace DUR" too (TestReadmeHTTPProgram). A
// fragment may use u (*tcpgrace.Upgrader), sigs (chan os.Signal), ln
// (net.Listener) and mux (http.Handler), and the packages of
// fragmentImports.
const (
	readmeProgram     = "program"
	readmeHTTPProgram = "http-program"
	readmeFragment    = "fragment"
)

// readmePrograms are the kinds of whole programs, each held exactly once
// by README.md, and the directory of the readme module each is built in.
var readmePrograms = map[string]string{readmeProgram: ".", readmeHTTPProgram: "http"}

// readmeMarker is the marker line; its group is the kind.
var readmeMarker = regexp.MustCompile(`^<!-- readme-test: (\S+) -->$`)

// fragmentImports are the packages a README fragment may use.
var fragmentImports = []string{"bufio", "bytes", "context", "crypto/tls", "errors", "io", "net", "net/http", "os", "time",
	"google.golang.org/grpc", "github.com/tcpgrace/tcpgrace/tcpgrace"}

// readmeBlock is one marked ```go block of README.md.
type readmeBlock struct {
	kind string
	line int // README.md's line of the block's first line of code
	code string
}

// readmeBlocks returns the ```go blocks of README.md, failing the test on
// a block without a marker, an unknown marker, a marker before anything
// but a ```go fence, or a block that does not end.
func readmeBlocks(t *testing.T) (path string, blocks []readmeBlock) {
	t.Helper()
	path, err := filepath.Abs("../README.md")
	require.NoError(t, err)
	lines := strings.Split(string(readFile(t, path)), "\n")
	for i := 0; i < len(lines); i++ {
		marker := readmeMarker.FindStringSubmatch(lines[i])
		if marker != nil {
			require.Contains(t, []string{readmeProgram, readmeHTTPProgram, readmeFragment}, marker[1], "README.md:%d: unknown marker", i+1)
			require.True(t, i+1 < len(lines) && lines[i+1] == "```go", "README.md:%d: a marker must be right before a ```go fence", i+1)
			continue
		}
		if lines[i] != "```go" {
			require.False(t, strings.HasPrefix(lines[i], "```go"), "README.md:%d: a Go block opens with exactly ```go", i+1)
			continue
		}
		require.True(t, i > 0 && readmeMarker.MatchString(lines[i-1]),
			"README.md:%d: this ```go block has no marker: mark it so that a test builds it", i+1)
		b := readmeBlock{kind: readmeMarker.FindStringSubmatch(lines[i-1])[1], line: i + 2}
		end := i + 1
		for end < len(lines) && lines[end] != "```" {
			end++
		}
		require.Less(t, end, len(lines), "README.md:%d: the ```go block never ends", i+1)
		b.code = strings.Join(lines[i+1:end], "\n") + "\n"
		blocks = append(blocks, b)
		i = end
	}
	return path, blocks
}

// TestReadmeBlocksMarked: every ```go block of README.md is marked, so
// that TestReadmeProgram builds it, and it holds each whole program once.
func TestReadmeBlocksMarked(t *testing.T) {
	_, blocks := readmeBlocks(t)
	kinds := map[string]int{}
	for _, b := range blocks {
		kinds[b.kind]++
	}
	for kind := range readmePrograms {
		assert.Equal(t, 1, kinds[kind], "README.md should hold exactly one block marked %q", kind)
	}
}

// readmeModule writes a module in a temp dir that uses this repository
// (a replace to its root, with its go.sum) and holds the README's
// programs (in the directories of readmePrograms) and its fragments in
// package fragments, vets it and builds the program of kind. It returns
// that program's binary. Compile and vet errors name README.md's lines.
func readmeModule(t *testing.T, kind string) string {
	t.Helper()
	readme, blocks := readmeBlocks(t)
	root := filepath.Dir(readme)
	dir := t.TempDir()
	// The requirements of this tests module (the library, and grpc for
	// the README's gRPC fragment), with its go.sum; the replace points at
	// the root by an absolute path.
	gomod := strings.Replace(string(readFile(t, "go.mod")), "module github.com/tcpgrace/tcpgrace/tests", "module readme", 1)
	gomod = strings.Replace(gomod, "=> ../", "=> "+root, 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), readFile(t, "go.sum"), 0o644))

	programs := map[string][]readmeBlock{}
	var frag strings.Builder
	frag.WriteString("// Package fragments holds the Go fragments of README.md.\npackage fragments\n\nimport (\n")
	for _, p := range fragmentImports {
		fmt.Fprintf(&frag, "\t%q\n", p)
	}
	frag.WriteString(")\n\n// Every import may go unused by the fragments.\nvar _ = []any{bufio.NewReader, bytes.NewReader, io.Copy, context.Background, tls.NewListener, errors.Is, net.Dial, http.StatusOK, os.Exit, time.Second, grpc.NewServer, tcpgrace.New}\n")
	for i, b := range blocks {
		switch b.kind {
		case readmeProgram, readmeHTTPProgram:
			programs[b.kind] = append(programs[b.kind], b)
		case readmeFragment:
			fmt.Fprintf(&frag, "\nfunc fragment%d(u *tcpgrace.Upgrader, sigs chan os.Signal, ln net.Listener, mux http.Handler) {\n//line %s:%d\n%s}\n",
				i, readme, b.line, b.code)
		}
	}
	for k, sub := range readmePrograms {
		require.Len(t, programs[k], 1, "README.md should hold exactly one block marked %q", k)
		program := fmt.Sprintf("//line %s:%d\n%s", readme, programs[k][0].line, programs[k][0].code)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, sub, "main.go"), []byte(program), 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "fragments"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fragments", "fragments.go"), []byte(frag.String()), 0o644))

	// go vet type-checks every package (go build -o skips those that are
	// not main). -mod=mod lets go adjust the requirements to what the
	// code imports; GOPROXY=off keeps it from looking anything up.
	bin := filepath.Join(dir, "readme-"+kind)
	for _, args := range [][]string{{"vet", "./..."}, {"build", "-o", bin, "./" + readmePrograms[kind]}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s, on README.md's Go code in a module of its own:\n%s", strings.Join(args, " "), out)
	}
	return bin
}

// TestReadmeProgram builds README.md's programs and its fragments (a
// README block that does not compile or fails go vet fails it, naming the
// README's line), then runs the raw TCP program as the README says: it
// serves once its pid file names it; it ignores SIGUSR2, which it did not
// register; on SIGUSR1 a new process takes over, writes its pid file and
// answers the next connections, while every connection meanwhile gets an
// answer; the old one exits 0; SIGTERM then drains the new one, which
// exits 0, and nothing was logged as a warning or an error.
func TestReadmeProgram(t *testing.T) {
	bin := readmeModule(t, readmeProgram)
	dir := t.TempDir()
	addr, pidFile := freeAddr(t), filepath.Join(dir, "hello.pid")
	r := startReadme(t, "README program", bin, dir, pidFile, "-addr", addr, "-pidfile", pidFile)
	first, logs, cmd, pidNow := r.first, r.logs, r.cmd, r.pidNow
	waitFor(t, fmt.Sprintf("the pid file to name %d\noutput:\n%s", first, logs), func() bool { return pidNow() == first })
	require.Equal(t, first, readmeAnswer(t, addr, first), "the program answers with its pid")

	// SIGUSR2 is not registered: Go ignores it (the README says so), the
	// process neither dies nor upgrades.
	require.NoError(t, syscall.Kill(first, syscall.SIGUSR2))
	require.Equal(t, first, readmeAnswer(t, addr, first), "an unregistered SIGUSR2 is ignored: the same process answers")
	require.Equal(t, first, pidNow(), "an unregistered SIGUSR2 starts no upgrade")

	require.NoError(t, syscall.Kill(first, syscall.SIGUSR1))
	var next int
	waitFor(t, "a new process in the pid file after SIGUSR1", func() bool {
		next = pidNow()
		return next != 0 && next != first
	})
	r.pids = append(r.pids, next)
	waitFor(t, fmt.Sprintf("a connection answered by the new process %d", next), func() bool {
		return readmeAnswer(t, addr, first, next) == next
	})

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the old process exits 0 after the upgrade")
	case <-time.After(waitTimeout):
		t.Fatal("the old process did not exit after the upgrade")
	}
	assert.Equal(t, next, readmeAnswer(t, addr, next), "the new process serves alone")

	require.NoError(t, syscall.Kill(next, syscall.SIGTERM))
	// The new process is the old one's child: re-parented to this process
	// (a subreaper) when the old one exited.
	ws, err := reap(next, waitTimeout)
	require.NoError(t, err, "reaping the new process after SIGTERM")
	require.True(t, ws.Exited() && ws.ExitStatus() == 0, "the new process exits 0 after SIGTERM, not %v", ws)
	assert.NotRegexp(t, `\b(WARN|ERROR)\b`, logs.String(), "nothing went wrong, so nothing was logged as a warning or an error")
}

// readmeRun is one README program a test started: the pids it learned
// of (each killed at the end), its pid file and its output.
type readmeRun struct {
	first   int
	pids    []int
	pidFile string
	logs    *logFile
	cmd     *exec.Cmd
}

// startReadme starts bin with args in dir (where a relative pid file or
// the TLS fragment's certificate files are), its output in
// dir/stderr.log; at the end of the test it kills every pid in r.pids
// and, if the test failed, logs the output under name.
func startReadme(t *testing.T, name, bin, dir, pidFile string, args ...string) *readmeRun {
	t.Helper()
	logs := &logFile{path: filepath.Join(dir, "stderr.log")}
	stderr, err := os.Create(logs.path)
	require.NoError(t, err)
	defer stderr.Close() // the program has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stderr, stderr
	require.NoError(t, cmd.Start())
	r := &readmeRun{first: cmd.Process.Pid, pids: []int{cmd.Process.Pid}, pidFile: pidFile, logs: logs, cmd: cmd}
	t.Cleanup(func() {
		for _, pid := range r.pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				reap(pid, time.Second)
			}
		}
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, logs)
		}
	})
	return r
}

// pidNow is the pid the pid file names, 0 if none.
func (r *readmeRun) pidNow() int {
	b, _ := os.ReadFile(r.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// readmeAnswer connects to addr, reads the one line the program answers,
// and returns the pid in it, which must be one of pids.
func readmeAnswer(t *testing.T, addr string, pids ...int) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(t, err, "connecting to the README program")
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestBudget))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == io.EOF && line != "" {
		err = nil
	}
	require.NoError(t, err, "reading the README program's answer")
	return answeringPID(t, line, pids)
}

// answeringPID returns the one of pids that answer names, failing the
// test if it names none.
func answeringPID(t *testing.T, answer string, pids []int) int {
	t.Helper()
	for _, pid := range pids {
		if regexp.MustCompile(fmt.Sprintf(`(^|\D)%d(\D|$)`, pid)).MatchString(answer) {
			return pid
		}
	}
	require.Failf(t, "the answer names no serving process", "answer %q, serving %v", answer, pids)
	return 0
}
