package tests

import (
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// What some tests need of the machine beyond Go and loopback IPv4: each
// checks first and skips, naming what is missing.

// needIPv6Loopback skips the test unless [::1] can be bound.
func needIPv6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("needs IPv6 loopback: cannot listen on [::1]: %v", err)
	}
	ln.Close()
}

// needPython skips the test unless python3 runs, and returns the
// interpreter itself (see pythonExe).
func needPython(t *testing.T) string {
	t.Helper()
	exe, err := pythonExe()
	if err != nil {
		t.Skipf("needs python3: %v", err)
	}
	return exe
}

// pythonExe is the interpreter that python3 on PATH runs, asked once
// for all tests: the interpreter itself rather than a wrapper found in
// PATH, since pyenv's shims are shell scripts that take about a second
// of their own on every start on a loaded machine.
var pythonExe = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return "", err
	}
	if exe := strings.TrimSpace(string(out)); exe != "" {
		return exe, nil
	}
	return "python3", nil // an interpreter that cannot tell where it is
})

// needShell skips the test unless /bin/sh runs and finds each of tools
// (builtins such as kill, exit and ulimit need no mention).
func needShell(t *testing.T, tools ...string) {
	t.Helper()
	script := `for tool in "$@"; do command -v "$tool" >/dev/null || { echo "$tool"; exit 1; }; done`
	out, err := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, tools...)...).Output()
	if err != nil {
		t.Skipf("needs /bin/sh with %v: %v (missing: %s)", tools, err, strings.TrimSpace(string(out)))
	}
}
