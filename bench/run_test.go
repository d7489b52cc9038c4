package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/supervisor"
)

// buildTools builds the tcpgrace command and lineserver into a temp dir.
func buildTools(b *testing.B) (tcpgrace, lineserver string) {
	b.Helper()
	dir := b.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/tcpgrace", "../examples/lineserver")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("building tcpgrace and lineserver: %v", err)
	}
	return filepath.Join(dir, "tcpgrace"), filepath.Join(dir, "lineserver")
}

// BenchmarkExecHelper is the cost of LISTEN_PID: tcpgrace run starts each
// instance as its own binary in the exec helper mode, which sets
// LISTEN_PID to its pid and execs the command in the same process. Each
// iteration starts /bin/true and waits for it, directly (impl=direct) or
// through the helper (impl=helper); the difference is the helper's cost.
func BenchmarkExecHelper(b *testing.B) {
	tg, _ := buildTools(b)
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("needs true(1)")
	}
	for _, c := range []struct {
		name string
		path string
		argv []string
	}{
		{"impl=direct", truePath, []string{"true"}},
		{"impl=helper", tg, []string{"tcpgrace", supervisor.ExecArg, truePath, "true"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}}
			for b.Loop() {
				pid, err := syscall.ForkExec(c.path, c.argv, attr)
				if err != nil {
					b.Fatal(err)
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
					b.Fatalf("%s: %v %v", c.name, err, ws)
				}
			}
		})
	}
}

// BenchmarkHandOff times one hand-off of lineserver, from the upgrade
// signal until the new process is ready, two ways in the same run:
// impl=selfexec is the library's own (SIGUSR1 to lineserver, which
// starts its next generation and hears its ready byte; lineserver logs
// "ready" right after), impl=supervisor goes through tcpgrace run (SIGUSR1
// to the supervisor, which starts the next instance through its exec
// helper and hears READY=1 on its notify socket; it logs "instance
// ready" then). The time until the old process has drained and exited is
// not counted. Both read their own log file, polled every 50 µs.
func BenchmarkHandOff(b *testing.B) {
	tg, ls := buildTools(b)
	b.Run("impl=selfexec", func(b *testing.B) {
		dir := b.TempDir()
		h := startLogged(b, dir, ls, "-tcp", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "pid"))
		h.handOffs(b, regexp.MustCompile(`msg=ready pid=(\d+) `),
			func(serving int) int { return serving },
			func(old int) string { return fmt.Sprintf(`msg=exit pid=%d\n`, old) })
	})
	b.Run("impl=supervisor", func(b *testing.B) {
		dir := b.TempDir()
		addr := freeAddr(b)
		h := startLogged(b, dir, tg, "run", "-listen", "tcp://"+addr, "--", ls, "-tcp", addr)
		h.handOffs(b, regexp.MustCompile(`msg="instance ready" pid=\d+ instance=(\d+) `),
			func(int) int { return h.cmd.Process.Pid },
			func(old int) string { return fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d `, old) })
	})
}

// logged is a benchmark's server process and its log file.
type logged struct {
	cmd  *exec.Cmd
	path string
}

func startLogged(b *testing.B, dir, bin string, args ...string) *logged {
	b.Helper()
	h := &logged{path: filepath.Join(dir, "stderr.log")}
	f, err := os.Create(h.path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stderr = f
	if err := h.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	})
	return h
}

func (h *logged) logs() string {
	data, _ := os.ReadFile(h.path)
	return string(data)
}

// handOffs runs b.N hand-offs, each timed from the SIGUSR1 to
// target(serving) until ready matches once more; ready's first group is
// the serving process. Untimed, it then waits until the line gone(old)
// says that the process that served before has exited.
func (h *logged) handOffs(b *testing.B, ready *regexp.Regexp, target func(serving int) int, gone func(old int) string) {
	b.Helper()
	wait := func(cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out; logs:\n%s", h.logs())
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	matches := func() [][]string { return ready.FindAllStringSubmatch(h.logs(), -1) }
	wait(func() bool { return len(matches()) > 0 })
	b.ResetTimer()
	for range b.N {
		m := matches()
		serving, _ := strconv.Atoi(m[len(m)-1][1])
		b.StartTimer()
		if err := syscall.Kill(target(serving), syscall.SIGUSR1); err != nil {
			b.Fatal(err)
		}
		wait(func() bool { return len(matches()) > len(m) })
		b.StopTimer()
		exited := regexp.MustCompile(gone(serving))
		wait(func() bool { return exited.MatchString(h.logs()) })
	}
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
