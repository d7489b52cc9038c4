//go:build linux

// Command mutants checks that the tests can fail: it applies each patch
// in tests/mutants to a fresh copy of the working tree (the files git
// tracks plus untracked files it does not ignore), runs the tests the
// patch names, and requires them to fail. Before the mutants it runs every
// named test on an unpatched copy, which must pass: a suite that fails
// without a mutant proves nothing.
//
// Usage, from the repository root (make mutants does this):
//
//	go run ./tests/mutants [-timeout DUR] [-j N] [-v] [-list] [MUTANT...]
//
// MUTANT is a patch's name without ".patch"; the default is all of them.
// It prints one line per mutant and exits 1 if a mutant is not caught, a
// patch does not apply (the mutant is stale), a mutant does not build, or
// the control run fails.
//
// A patch starts with a header, then a unified diff for patch -p1:
//
//	Mutant: what the patch breaks, in one line
//	Caught by: ./tests TestOne TestTwo/sub
//	Caught by: ./tcpgrace TestThree
//
// Each "Caught by" line names a package and tests in it, as -run matches
// them (a sub-test's spaces are underscores). Within a package the
// sub-test names form one -run level: they filter every named test that
// has sub-tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() { os.Exit(run()) }

func run() int {
	timeout := flag.Duration("timeout", 90*time.Second, "go test -timeout for each package run")
	jobs := flag.Int("j", 1, "mutants to run at once, each in a copy of its own (the control run is alone)")
	verbose := flag.Bool("v", false, "print the output of the failed tests")
	list := flag.Bool("list", false, "list the mutants and the tests meant to catch them, run nothing")
	flag.Parse()
	root, err := gitRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		return 2
	}
	mutants, err := loadMutants(filepath.Join(root, "tests", "mutants"), flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		return 2
	}
	if *list {
		printList(mutants)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Server generations the tests leave behind are re-parented to us,
	// so that we can reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "mutants: PR_SET_CHILD_SUBREAPER:", err)
	}
	r := &runner{root: root, timeout: *timeout, verbose: *verbose, jobs: max(*jobs, 1)}
	return r.all(ctx, mutants)
}

// runner runs the control and the mutants in one temp dir; each worker
// copies the tree to a path of its own, the same for all its runs, so the
// build cache serves what a patch did not touch.
type runner struct {
	root    string
	tmp     string
	timeout time.Duration
	verbose bool
	jobs    int
	out     sync.Mutex // one mutant's lines at a time
}

// src is worker i's copy of the tree.
func (r *runner) src(i int) string { return filepath.Join(r.tmp, fmt.Sprintf("src%d", i)) }

func (r *runner) all(ctx context.Context, mutants []*mutant) int {
	tmp, err := os.MkdirTemp("", "tcpgrace-mutants-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		return 2
	}
	defer os.RemoveAll(tmp)
	r.tmp = tmp
	start := time.Now()
	if !r.control(ctx, mutants) {
		fmt.Println("mutants: the control run failed: the results would mean nothing")
		return 1
	}
	work := make(chan *mutant)
	var failed atomic.Int32
	var wg sync.WaitGroup
	for i := range r.jobs {
		wg.Go(func() {
			for m := range work {
				if !r.mutant(ctx, m, r.src(i)) {
					failed.Add(1)
				}
			}
		})
	}
	for _, m := range mutants {
		if ctx.Err() != nil {
			break
		}
		work <- m
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		fmt.Println("mutants: interrupted")
		return 1
	}
	fmt.Printf("mutants: %d of %d caught in %s\n", len(mutants)-int(failed.Load()), len(mutants), time.Since(start).Round(time.Second))
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

// control runs every mutant's tests on an unpatched copy: each must run
// and pass.
func (r *runner) control(ctx context.Context, mutants []*mutant) bool {
	var all []spec
	for _, m := range mutants {
		for _, s := range m.specs {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
	}
	if err := copyTree(r.root, r.src(0)); err != nil {
		fmt.Println("control: copying the tree:", err)
		return false
	}
	start := time.Now()
	res := runSpecs(ctx, r.src(0), all, r.timeout, false)
	missing := res.notRun(all)
	switch {
	case res.broken != "":
		fmt.Printf("control: FAILED (%s)\n%s", res.broken, indent(res.tail))
	case len(res.failed) > 0:
		fmt.Printf("control: FAILED: %s failed without a mutant\n", strings.Join(res.labels(), ", "))
		r.details(os.Stdout, res)
	case len(missing) > 0:
		fmt.Printf("control: FAILED: no such test: %s (renamed? fix the patch header)\n", strings.Join(missing, ", "))
	default:
		fmt.Printf("control: %d test(s) pass unpatched (%s)\n", len(all), time.Since(start).Round(100*time.Millisecond))
		return true
	}
	return false
}

// mutant applies m to a fresh copy at src and runs its tests; it reports
// whether they caught it, and prints its lines in one piece.
func (r *runner) mutant(ctx context.Context, m *mutant, src string) bool {
	var b strings.Builder
	defer func() {
		r.out.Lock()
		fmt.Print(b.String())
		r.out.Unlock()
	}()
	label := "mutant " + m.name + ":"
	if err := copyTree(r.root, src); err != nil {
		fmt.Fprintln(&b, label, "copying the tree:", err)
		return false
	}
	if out, err := applyPatch(src, m.path); err != nil {
		fmt.Fprintf(&b, "%s STALE: the patch does not apply (%v); refresh it against the current code\n%s", label, err, indent(out))
		return false
	}
	start := time.Now()
	res := runSpecs(ctx, src, m.specs, r.timeout, true)
	took := time.Since(start).Round(100 * time.Millisecond)
	switch {
	case res.broken != "":
		fmt.Fprintf(&b, "%s BROKEN: %s, not caught by a test (%s)\n%s", label, res.broken, took, indent(res.tail))
		return false
	case len(res.failed) == 0:
		fmt.Fprintf(&b, "%s NOT CAUGHT (tests passed: %s) (%s)\n", label, strings.Join(specNames(m.specs), ", "), took)
		return false
	}
	line := fmt.Sprintf("%s caught by %s", label, strings.Join(res.labels(), ", "))
	if passed := res.passedOf(m.specs); len(passed) > 0 {
		line += fmt.Sprintf(" (passed: %s)", strings.Join(passed, ", "))
	}
	fmt.Fprintf(&b, "%s (%s)\n", line, took)
	r.details(&b, res)
	return true
}

// details writes the failed tests' output to w with -v.
func (r *runner) details(w io.Writer, res *result) {
	if !r.verbose {
		return
	}
	for _, name := range res.leaves() {
		fmt.Fprintf(w, "  --- %s\n%s", res.label(name), indent(res.output[name]))
	}
}

// applyPatch applies the patch at path to dir: exact context only (no
// fuzz), never interactive.
func applyPatch(dir, path string) (string, error) {
	cmd := exec.Command("patch", "-p1", "-s", "-t", "-N", "-F0", "-d", dir, "-i", path)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// gitRoot is the top of the working tree we are in.
func gitRoot() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", errors.New("run me inside the repository's git working tree")
	}
	return strings.TrimSpace(string(out)), nil
}

// indent prefixes every line of text, for output under a mutant's line.
func indent(text string) string {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(text, "\n", "\n    ") + "\n"
}
