//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
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
		err = cmd.Wait()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers, if any
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

// reapOrphans reaps the processes re-parented to us (we are a child
// subreaper) once they have died of the group kill; it gives up after a
// few seconds on one that lives on (it left the group).
func reapOrphans() {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case err != nil: // ECHILD: none left
			return
		case pid == 0:
			time.Sleep(10 * time.Millisecond)
		}
	}
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
