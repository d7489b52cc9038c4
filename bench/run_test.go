package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
// iteration starts /bin/true and waits for it twice, directly and through
// the helper, alternately so that both see the same machine; it reports
// the mean and median of each (direct-ms, helper-ms, ...), whose
// difference is the helper's cost.
func BenchmarkExecHelper(b *testing.B) {
	tg, _ := buildTools(b)
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("needs true(1)")
	}
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}}
	run := func(path string, argv ...string) time.Duration {
		begin := time.Now()
		pid, err := syscall.ForkExec(path, argv, attr)
		if err != nil {
			b.Fatal(err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
			b.Fatalf("%s: %v %v", path, err, ws)
		}
		return time.Since(begin)
	}
	var direct, helper []time.Duration
	for b.Loop() {
		direct = append(direct, run(truePath, "true"))
		helper = append(helper, run(tg, "tcpgrace", supervisor.ExecArg, truePath, "true"))
	}
	report(b, "direct", direct)
	report(b, "helper", helper)
}

// BenchmarkHandOff times hand-offs of lineserver, from the upgrade signal
// until the new process is ready, two ways in the same run, alternately:
// selfexec is the library's own (SIGUSR1 to lineserver, which starts its
// next generation and hears its ready byte; lineserver logs "ready" right
// after), supervisor goes through tcpgrace run (SIGUSR1 to the supervisor,
// which starts the next instance through its exec helper and hears
// READY=1 on its notify socket; it logs "instance ready" then). The wait
// until the old process has drained and exited is not counted. Both read
// their own log file, polled every 50 µs. It reports the mean and median
// of each (selfexec-ms, supervisor-ms, ...).
func BenchmarkHandOff(b *testing.B) {
	tg, ls := buildTools(b)
	dir := b.TempDir()
	self := startLogged(b, filepath.Join(dir, "self.log"), ls, "-tcp", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "pid"))
	self.ready = regexp.MustCompile(`msg=ready pid=(\d+) `)
	self.target = func(serving int) int { return serving }
	self.gone = func(old int) string { return fmt.Sprintf(`msg=exit pid=%d[ \n]`, old) }
	addr := freeAddr(b)
	sup := startLogged(b, filepath.Join(dir, "run.log"), tg, "run", "-listen", "tcp://"+addr, "--", ls, "-tcp", addr)
	sup.ready = regexp.MustCompile(`msg="instance ready" pid=\d+ instance=(\d+) `)
	sup.target = func(int) int { return sup.cmd.Process.Pid }
	sup.gone = func(old int) string { return fmt.Sprintf(`msg="instance exited" pid=\d+ instance=%d `, old) }
	var selfexec, supervised []time.Duration
	for b.Loop() {
		selfexec = append(selfexec, self.handOff(b))
		supervised = append(supervised, sup.handOff(b))
	}
	report(b, "selfexec", selfexec)
	report(b, "supervisor", supervised)
}

// report adds the mean and the median of ds, in ms, as metrics.
func report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	b.ReportMetric(float64(sum.Microseconds())/float64(len(ds))/1000, name+"-ms")
	b.ReportMetric(float64(sorted[len(sorted)/2].Microseconds())/1000, name+"-p50-ms")
}

// logged is a benchmark's server process and its log file: ready's
// first group is the serving process, target(serving) the process to
// signal for an upgrade, gone(old) the line that says the old one exited.
type logged struct {
	cmd    *exec.Cmd
	path   string
	ready  *regexp.Regexp
	target func(serving int) int
	gone   func(old int) string
}

func startLogged(b *testing.B, logPath, bin string, args ...string) *logged {
	b.Helper()
	h := &logged{path: logPath}
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
		h.cmd.Process.Signal(syscall.SIGTERM)
		h.cmd.Wait()
	})
	return h
}

func (h *logged) logs() string {
	data, _ := os.ReadFile(h.path)
	return string(data)
}

// wait polls cond every 50 µs, for up to 30 s.
func (h *logged) wait(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out; logs:\n%s", h.logs())
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// handOff sends one SIGUSR1 and returns the time until ready matches once
// more; then it waits, untimed, until the process that served has exited.
func (h *logged) handOff(b *testing.B) time.Duration {
	b.Helper()
	matches := func() [][]string { return h.ready.FindAllStringSubmatch(h.logs(), -1) }
	h.wait(b, func() bool { return len(matches()) > 0 })
	m := matches()
	serving, _ := strconv.Atoi(m[len(m)-1][1])
	begin := time.Now()
	if err := syscall.Kill(h.target(serving), syscall.SIGUSR1); err != nil {
		b.Fatal(err)
	}
	h.wait(b, func() bool { return len(matches()) > len(m) })
	took := time.Since(begin)
	exited := regexp.MustCompile(h.gone(serving))
	h.wait(b, func() bool { return exited.MatchString(h.logs()) })
	return took
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
