package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkMoveIdle times the move of idle HTTP/1.1 keep-alive
// connections to the next generation of examples/http, with 1,000 and
// 10,000 connections. The benchmark opens them (one request each, then
// idle), then each iteration upgrades once (SIGUSR1): the old generation
// hands them all over and exits. It reports move-ms, the time from the
// old generation's drain start until the new one acknowledged every
// connection (the old generation's log: since_drain), and
// rss-KiB/conn, what the new generation's resident memory grew by per
// connection it adopted, measured once every connection has been
// answered again (a request on each) by the new generation.
func BenchmarkMoveIdle(b *testing.B) {
	bin := buildHTTP(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			pidFile := filepath.Join(dir, "pid")
			s := startLogged(b, filepath.Join(dir, "http.log"), bin, "-http", "127.0.0.1:0", "-pidfile", pidFile, "-drain-timeout", "60s")
			b.Cleanup(func() { syscall.Kill(readPIDFile(pidFile), syscall.SIGTERM) })
			addr := waitMatch(b, s, regexp.MustCompile(`msg=listening .*listener=http .*addr=(\S+)`))
			base := rssKiB(s.cmd.Process.Pid) // a generation that serves no connection
			conns := openIdle(b, addr, n)
			var moveMs, rssPer float64
			for b.Loop() {
				pid := readPIDFile(pidFile)
				syscall.Kill(pid, syscall.SIGUSR1)
				moveMs += float64(waitMoved(b, s, pid, n).Microseconds()) / 1000
				next := askAll(b, conns)
				rssPer += float64(rssKiB(next)-base) / float64(n)
			}
			b.ReportMetric(moveMs/float64(b.N), "move-ms")
			b.ReportMetric(rssPer/float64(b.N), "rss-KiB/conn")
		})
	}
}

// waitMoved waits until generation pid has logged the move of n
// connections, in one transaction or more, and returns the since_drain of
// the last.
func waitMoved(b *testing.B, s *logged, pid, n int) time.Duration {
	b.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`msg="idle connections handed to the next generation" pid=%d .*connections=(\d+) since_drain=(\S+)`, pid))
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		moved, last := 0, ""
		for _, m := range re.FindAllStringSubmatch(s.logs(), -1) {
			k, _ := strconv.Atoi(m[1])
			moved, last = moved+k, m[2]
		}
		if moved >= n {
			d, err := time.ParseDuration(last)
			if err != nil {
				b.Fatal(err)
			}
			return d
		}
	}
	b.Fatalf("timed out waiting for generation %d to move %d connections; logs:\n%s", pid, n, s.logs())
	return 0
}

// waitMatch polls s's log every millisecond, for up to 30 s, until re
// matches, and returns its first group.
func waitMatch(b *testing.B, s *logged, re *regexp.Regexp) string {
	b.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if m := re.FindStringSubmatch(s.logs()); m != nil {
			return m[1]
		}
	}
	b.Fatalf("timed out waiting for %s; logs:\n%s", re, s.logs())
	return ""
}

// readPIDFile is the pid the file holds, 0 if none.
func readPIDFile(path string) int {
	raw, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return pid
}

// buildHTTP builds examples/http into a temp dir.
func buildHTTP(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "../examples/http")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("building examples/http: %v", err)
	}
	return filepath.Join(dir, "http")
}

// idleConn is one keep-alive connection of the benchmark.
type idleConn struct {
	c net.Conn
	r *bufio.Reader
}

// openIdle opens n connections to addr and sends one request on each.
func openIdle(b *testing.B, addr string, n int) []idleConn {
	b.Helper()
	conns := make([]idleConn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = idleConn{c: c, r: bufio.NewReader(c)}
	}
	askAll(b, conns)
	return conns
}

// askAll sends GET / on every connection, then reads every answer, which
// must come from one pid, without "Connection: close"; it returns the pid.
func askAll(b *testing.B, conns []idleConn) int {
	b.Helper()
	for i, ic := range conns {
		ic.c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(ic.c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
	}
	pid := 0
	for i, ic := range conns {
		resp, err := http.ReadResponse(ic.r, nil)
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.Close {
			b.Fatalf("connection %d: %v (Connection: close %v)", i, err, resp.Close)
		}
		p, _ := strconv.Atoi(strings.TrimSpace(string(body)))
		if pid != 0 && p != pid {
			b.Fatalf("connection %d answered by %d, the others by %d", i, p, pid)
		}
		pid = p
	}
	return pid
}

// rssKiB is process pid's resident memory (VmRSS), 0 if unknown.
func rssKiB(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}
