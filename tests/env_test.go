package tests

import (
	"net"
	"os/exec"
	"strings"
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

// needPython skips the test unless python3 runs.
func needPython(t *testing.T) {
	t.Helper()
	if err := exec.Command("python3", "-c", "").Run(); err != nil {
		t.Skipf("needs python3: %v", err)
	}
}

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
