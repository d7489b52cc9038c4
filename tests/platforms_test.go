package tests

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// windowsReason is the undefined name a Windows build of the library
// stops on: the compiler prints it, so it says why.
const windowsReason = "tcpgrace_supports_linux_and_unix_only"

// TestWindowsBuildSaysWhy: the library's packages and the command do not
// build for Windows, and the one error the compiler prints names the
// reason (Linux and Unix only), not some missing syscall deep inside.
// make vet-platforms checks darwin and freebsd, where they build.
func TestWindowsBuildSaysWhy(t *testing.T) {
	const module = "github.com/tcpgrace/tcpgrace/"
	for _, pkg := range []string{module + "tcpgrace", module + "inherit", module + "cmd/tcpgrace"} {
		t.Run(strings.TrimPrefix(pkg, module), func(t *testing.T) {
			cmd := exec.Command("go", "build", "-o", os.DevNull, pkg)
			cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "GOOS=windows go build %s should fail, and it built:\n%s", pkg, out)
			var errs []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(line, "#") {
					errs = append(errs, line)
				}
			}
			require.Len(t, errs, 1, "GOOS=windows go build %s: one error, the reason, expected:\n%s", pkg, out)
			assert.Regexp(t, regexp.MustCompile(`unsupported_windows\.go:\d+:\d+: undefined: `+windowsReason+`$`), errs[0])
		})
	}
}
