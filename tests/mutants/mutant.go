//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// mutant is one patch and the tests meant to catch it.
type mutant struct {
	name  string // the file name without ".patch"
	path  string
	about string // its "Mutant:" line
	specs []spec // from its "Caught by:" lines
}

// spec is one test that should catch a mutant: a package as go test
// takes it and a -run name, "TestX" or "TestX/sub".
type spec struct{ pkg, test string }

// loadMutants reads the patches in dir, sorted by name; names, if given,
// pick some of them.
func loadMutants(dir string, names []string) ([]*mutant, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.patch"))
	if err != nil {
		return nil, err
	}
	var out []*mutant
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".patch")
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		m, err := readHeader(p)
		if err != nil {
			return nil, err
		}
		m.name = name
		out = append(out, m)
	}
	for _, n := range names {
		if !slices.ContainsFunc(out, func(m *mutant) bool { return m.name == n }) {
			return nil, fmt.Errorf("no mutant %q in %s", n, dir)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no *.patch in %s", dir)
	}
	return out, nil
}

// readHeader parses the lines before the diff.
func readHeader(path string) (*mutant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := &mutant{path: path}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "diff ") {
			break
		}
		if v, ok := strings.CutPrefix(line, "Mutant:"); ok {
			m.about = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Caught by:"); ok {
			fields := strings.Fields(v)
			if len(fields) < 2 {
				return nil, fmt.Errorf("%s: %q: want a package and at least one test", path, line)
			}
			for _, t := range fields[1:] {
				m.specs = append(m.specs, spec{fields[0], t})
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if m.about == "" || len(m.specs) == 0 {
		return nil, fmt.Errorf("%s: the header needs a \"Mutant:\" line and a \"Caught by:\" line", path)
	}
	return m, nil
}

func printList(mutants []*mutant) {
	for _, m := range mutants {
		fmt.Printf("%s: %s\n    to be caught by: %s\n", m.name, m.about, strings.Join(specNames(m.specs), ", "))
	}
}

func specNames(specs []spec) []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.test)
	}
	return out
}
