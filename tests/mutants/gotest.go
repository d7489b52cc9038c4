//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// result is what go test said about the tests of one run.
type result struct {
	failed []string          // every failed test and sub-test, in order
	passed map[string]bool   // tests and sub-tests that passed
	hung   map[string]bool   // failed tests that were running at go test's timeout
	output map[string]string // each test's output
	broken string            // why a package failed outside its tests (build, TestMain), or ""
	tail   string            // the end of the output, for a broken run
}

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action, Package, Test, Output, FailedBuild string
}

// runSpecs runs go test once per package for specs, in dir, and merges
// the results.
func runSpecs(ctx context.Context, dir string, specs []spec, timeout time.Duration, failFast bool) *result {
	res := &result{passed: map[string]bool{}, hung: map[string]bool{}, output: map[string]string{}}
	var pkgs []string
	for _, s := range specs {
		if !slices.Contains(pkgs, s.pkg) {
			pkgs = append(pkgs, s.pkg)
		}
	}
	for _, pkg := range pkgs {
		var tests []string
		for _, s := range specs {
			if s.pkg == pkg {
				tests = append(tests, s.test)
			}
		}
		res.goTest(ctx, dir, pkg, runPattern(tests), timeout, failFast)
		if failFast && (len(res.failed) > 0 || res.broken != "") {
			break // caught (or broken): the other packages would tell nothing more
		}
	}
	return res
}

// runPattern builds a -run pattern matching exactly tests: the top-level
// names on the first level, the sub-test names (if any) on the second.
func runPattern(tests []string) string {
	var tops, subs []string
	for _, t := range tests {
		top, sub, ok := strings.Cut(t, "/")
		if !slices.Contains(tops, regexp.QuoteMeta(top)) {
			tops = append(tops, regexp.QuoteMeta(top))
		}
		if ok && !slices.Contains(subs, regexp.QuoteMeta(sub)) {
			subs = append(subs, regexp.QuoteMeta(sub))
		}
	}
	p := "^(" + strings.Join(tops, "|") + ")$"
	if len(subs) > 0 {
		p += "/^(" + strings.Join(subs, "|") + ")$"
	}
	return p
}

// goTest runs one package's tests in their own process group, which is
// killed afterwards: a test that failed or timed out may leave server
// processes behind.
func (res *result) goTest(ctx context.Context, dir, pkg, pattern string, timeout time.Duration, failFast bool) {
	// A hard stop past go test's own timeout, which leaves time to build.
	ctx, cancel := context.WithTimeout(ctx, timeout+2*time.Minute)
	defer cancel()
	args := []string{"test", "-count=1", "-json", "-timeout", timeout.String(), "-run", pattern}
	if failFast {
		args = append(args, "-failfast") // one failed test catches the mutant: start no other
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err == nil {
		running.add(cmd.Process.Pid)
		err = cmd.Wait()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers, if any
		running.remove(cmd.Process.Pid)
		reapOrphans()
	}
	res.parse(pkg, stdout.Bytes())
	res.judge(pkg, err, stderr.String())
}

// parse reads go test -json output.
func (res *result) parse(pkg string, out []byte) {
	var all strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	timedOut := false
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			all.WriteString(sc.Text() + "\n")
			continue
		}
		all.WriteString(e.Output)
		if e.Action == "output" {
			res.outputLine(e, &timedOut)
			continue
		}
		switch {
		case e.Action == "fail" && e.Test != "" && !slices.Contains(res.failed, e.Test):
			res.failed = append(res.failed, e.Test)
		case e.Action == "pass" && e.Test != "":
			res.passed[e.Test] = true
		case e.Action == "build-fail" || e.FailedBuild != "":
			res.broken = pkg + " does not build"
		}
	}
	res.tail = lastLines(all.String(), 30)
}

// outputLine keeps a test's output, and takes the tests that were still
// running from a timeout's panic ("running tests:" lists them) as failed.
func (res *result) outputLine(e event, timedOut *bool) {
	if e.Test != "" {
		res.output[e.Test] += e.Output
	}
	switch {
	case strings.HasPrefix(e.Output, "panic: test timed out"):
		*timedOut = true
	case *timedOut && strings.HasPrefix(e.Output, "\t\t"):
		name, _, ok := strings.Cut(strings.TrimSpace(e.Output), " (")
		if ok && !slices.Contains(res.failed, name) {
			res.failed = append(res.failed, name)
			res.hung[name] = true
		}
	}
}

// judge decides what a failed go test without a failed test means.
func (res *result) judge(pkg string, err error, stderr string) {
	if err == nil || res.broken != "" {
		if res.broken != "" {
			res.tail = lastLines(res.tail+stderr, 30)
		}
		return
	}
	if len(res.failed) == 0 {
		res.broken = fmt.Sprintf("%s failed outside its tests: %v", pkg, err)
		res.tail = lastLines(res.tail+stderr, 30)
	}
}

// leaves are the failed tests without a failed sub-test: what failed,
// rather than the parents that failed because of it.
func (res *result) leaves() []string {
	var out []string
	for _, t := range res.failed {
		if !slices.ContainsFunc(res.failed, func(u string) bool { return strings.HasPrefix(u, t+"/") }) {
			out = append(out, t)
		}
	}
	return out
}

// label is a failed test's name as printed.
func (res *result) label(test string) string {
	if res.hung[test] {
		return test + " (timed out)"
	}
	return test
}

// passedOf lists the specs that passed, to show which meant-to-catch
// tests did not.
func (res *result) passedOf(specs []spec) []string {
	var out []string
	for _, s := range specs {
		if res.passed[s.test] {
			out = append(out, s.test)
		}
	}
	return out
}

// notRun lists the specs that did not run at all: no such test.
func (res *result) notRun(specs []spec) []string {
	var out []string
	for _, s := range specs {
		if !res.passed[s.test] && !slices.Contains(res.failed, s.test) {
			out = append(out, s.pkg+" "+s.test)
		}
	}
	return out
}

// running are the go test processes the workers wait for themselves:
// reapOrphans leaves them alone, so that two workers may run at once.
var running = &pidSet{pids: map[int]bool{}}

type pidSet struct {
	mu   sync.Mutex
	pids map[int]bool
}

func (p *pidSet) add(pid int)    { p.mu.Lock(); p.pids[pid] = true; p.mu.Unlock() }
func (p *pidSet) remove(pid int) { p.mu.Lock(); delete(p.pids, pid); p.mu.Unlock() }
func (p *pidSet) has(pid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pids[pid]
}

// reapOrphans reaps the processes re-parented to us (we are a child
// subreaper) once they exit, and waits up to 3 s for those still running:
// every child of ours but the go test processes of running (which their
// workers wait for). It looks for them in /proc rather than with
// wait4(-1), which would take a running worker's go test from it.
func reapOrphans() {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		orphans := childrenOf(os.Getpid())
		left := 0
		for _, c := range orphans {
			if running.has(c.pid) {
				continue
			}
			if c.zombie {
				var ws unix.WaitStatus
				unix.Wait4(c.pid, &ws, unix.WNOHANG, nil)
				continue
			}
			left++
		}
		if left == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// child is a process whose parent is us, and whether it has exited.
type child struct {
	pid    int
	zombie bool
}

// childrenOf lists the processes whose parent is ppid (/proc/PID/stat).
func childrenOf(ppid int) []child {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []child
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // state ppid ...
		if len(f) < 2 {
			continue
		}
		if p, _ := strconv.Atoi(f[1]); p == ppid {
			out = append(out, child{pid: pid, zombie: f[0] == "Z"})
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// labels are the leaves as printed.
func (res *result) labels() []string {
	var out []string
	for _, t := range res.leaves() {
		out = append(out, res.label(t))
	}
	return out
}
