package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpgradeRefusedAsPID1: lineserver as PID 1 of its own PID namespace
// (a container's entrypoint) refuses an upgrade with a reason that says
// what to use instead, and keeps serving under load; SIGTERM then ends it
// and the namespace cleanly. Before, the upgrade succeeded and the old
// generation's exit killed the namespace, new generation included.
func TestUpgradeRefusedAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a new PID namespace (unshare --pid)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) (util-linux)")
	}
	dir := t.TempDir()
	logs := &logFile{path: filepath.Join(dir, "stderr.log")}
	stderr, err := os.Create(logs.path)
	require.NoError(t, err)
	defer stderr.Close()
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", lineserverBin,
		"-tcp", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "pid"))
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "lineserver to be ready inside the namespace", func() bool { return strings.Contains(logs.String(), "msg=ready pid=1 ") })
	pid := namespaceInit(t, cmd.Process.Pid)
	s := &server{t: t, logs: logs}
	l := startLoad([]target{{"tcp", s.addr("tcp:127.0.0.1:0")}}, 2, 1_000_000)
	l.waitRequests(t, 100)

	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	waitLog(t, s, `level=WARN msg="upgrade refused" pid=1 `)
	assert.Contains(t, logs.String(), "PID 1 of its PID namespace", "the refusal says why")
	assert.Contains(t, logs.String(), "docker run --init", "and what to use instead")
	assert.NotContains(t, logs.String(), "upgrade: started next generation", "no next generation was started")
	l.waitRequests(t, 100)
	l.stopLoad(t)

	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "lineserver drains and exits 0, and unshare with it\nlogs:\n%s", logs)
	assert.Contains(t, logs.String(), "msg=exit pid=1 clean=true\n")
}

// namespaceInit is the pid, as seen from here, of the one child of
// unshare --fork: PID 1 of the new namespace.
func namespaceInit(t *testing.T, unsharePID int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", unsharePID, unsharePID))
	require.NoError(t, err)
	fields := strings.Fields(string(b))
	require.Len(t, fields, 1, "unshare --fork has one child")
	pid, err := strconv.Atoi(fields[0])
	require.NoError(t, err)
	return pid
}
