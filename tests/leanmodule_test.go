package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heavyModules are module paths (or prefixes of them) that a program
// importing the library must not get in its module graph: they belong to
// the examples, tests and benchmarks, each a module of its own.
var heavyModules = []string{
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
	"google.golang.org/genproto",
	"golang.org/x/net",
	"github.com/quic-go/",
	"github.com/prometheus/",
}

// libraryRequires is all the library module (the repository's root
// go.mod) requires directly: x/sys and go-multierror for the code,
// testify and goleak for its own tests.
var libraryRequires = []string{
	"github.com/hashicorp/go-multierror",
	"github.com/stretchr/testify",
	"go.uber.org/goleak",
	"golang.org/x/sys",
}

// consumerMain is a program that imports both public packages.
const consumerMain = `package main

import (
	"github.com/tcpgrace/tcpgrace/inherit"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

func main() { _, _ = tcpgrace.New, inherit.Take }
`

// TestLeanModule: a fresh module on Go 1.25 that imports tcpgrace and
// inherit (the repository's root by a replace), tidied outside the
// workspace, has none of the heavy dependencies in its module graph and
// keeps its go line; and the library module requires only what it says
// it does.
func TestLeanModule(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dir := t.TempDir()
	gomod := fmt.Sprintf("module example.com/consumer\n\ngo 1.25.0\n\nrequire github.com/tcpgrace/tcpgrace v0.0.0\n\nreplace github.com/tcpgrace/tcpgrace => %s\n", root)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(consumerMain), 0o644))

	consumerGo(t, dir, "mod", "tidy")
	graph := strings.Fields(consumerGo(t, dir, "list", "-m", "-f", "{{.Path}}", "all"))
	require.Contains(t, graph, "github.com/tcpgrace/tcpgrace", "go list -m all of the consumer")
	var found []string
	for _, m := range graph {
		for _, heavy := range heavyModules {
			if strings.HasPrefix(m, heavy) {
				found = append(found, m)
			}
		}
	}
	assert.Empty(t, found, "a program that imports tcpgrace and inherit gets these in its module graph; all of it (go list -m all):\n%s", strings.Join(graph, "\n"))
	assert.Equal(t, "1.25.0", goLine(t, filepath.Join(dir, "go.mod")), "go mod tidy raised the go line of a consumer on Go 1.25")
	assert.Equal(t, libraryRequires, directRequires(t, filepath.Join(root, "go.mod")), "the library module's direct requirements (%s)", filepath.Join(root, "go.mod"))
}

// consumerGo runs go in the consumer module dir, outside any workspace,
// free to write its go.mod and go.sum, and returns its stdout.
func consumerGo(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go %s in a consumer module:\n%s", strings.Join(args, " "), stderr.String())
	return string(out)
}

// goModFile is what go mod edit -json tells of a go.mod.
type goModFile struct {
	Go      string
	Require []struct {
		Path     string
		Indirect bool
	}
}

// readGoMod parses the go.mod at path.
func readGoMod(t *testing.T, path string) goModFile {
	t.Helper()
	out, err := exec.Command("go", "mod", "edit", "-json", path).Output()
	require.NoError(t, err, "go mod edit -json %s", path)
	var mod goModFile
	require.NoError(t, json.Unmarshal(out, &mod), "go mod edit -json %s", path)
	return mod
}

// goLine is the version on the go line of the go.mod at path.
func goLine(t *testing.T, path string) string { return readGoMod(t, path).Go }

// directRequires is the sorted module paths the go.mod at path requires
// without "// indirect".
func directRequires(t *testing.T, path string) []string {
	t.Helper()
	mod := readGoMod(t, path)
	var direct []string
	for _, r := range mod.Require {
		if !r.Indirect {
			direct = append(direct, r.Path)
		}
	}
	sort.Strings(direct)
	return direct
}
