//go:build linux

package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// TestReadProc: the fields of /proc/PID/stat after a command name that
// holds spaces and parentheses, LISTEN_PID from a process's environment,
// and the children a census walks.
func TestReadProc(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("needs sleep(1)")
	}
	odd := filepath.Join(t.TempDir(), "a) 1 2 (b")
	require.NoError(t, os.Symlink(sleep, odd))
	cmd := exec.Command(odd, "10")
	cmd.Env = []string{wire.EnvListenPID + "=4242"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	// Start returns once the exec has begun, before the kernel has laid
	// out the new program's environment: until then environ reads empty.
	deadline := time.Now().Add(5 * time.Second)
	for listenPIDOf(pid) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}

	p, ok := proc.ReadStat(pid)
	require.True(t, ok, "the child runs")
	assert.Equal(t, proc.Stat{PID: pid, PPID: os.Getpid(), PGID: pid, SID: pid, State: p.State, Start: p.Start}, p)
	assert.NotZero(t, p.Start, "a start time")
	assert.Equal(t, 4242, listenPIDOf(pid))

	assert.Contains(t, pidsOf(below(os.Getpid())[os.Getpid()]), pid, "the census finds the child")

	self, ok := proc.ReadStat(os.Getpid())
	require.True(t, ok)
	assert.Equal(t, os.Getppid(), self.PPID)
	assert.Equal(t, syscall.Getpgrp(), self.PGID)
	assert.Less(t, self.Start, p.Start+1, "started before its child")
	assert.Equal(t, 0, listenPIDOf(os.Getpid()))

	_, ok = proc.ReadStat(-1)
	assert.False(t, ok, "no such process")
}
