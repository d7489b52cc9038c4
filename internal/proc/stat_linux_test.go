package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tail is the fields of a /proc/PID/stat line after ppid pgrp session,
// up to and past starttime (field 22, here 8888).
const tail = " 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 8888 16 17 18"

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		name, line string
		want       Stat
		ok         bool
	}{
		{"plain", "42 (sleep) S 1 42 42" + tail + "\n", Stat{42, 1, 42, 42, 'S', 8888}, true},
		{"comm with spaces and parentheses", "42 (a) 1 2 (b) R 7 8 9" + tail, Stat{42, 7, 8, 9, 'R', 8888}, true},
		{"a stray parenthesis at the end", "42 () Z 5 6 7" + tail + ")", Stat{}, false},
		{"zombie", "42 (x) Z 1 2 3" + tail, Stat{42, 1, 2, 3, 'Z', 8888}, true},
		{"empty", "", Stat{}, false},
		{"no comm", "42 S 1 42 42" + tail, Stat{}, false},
		{"too few fields", "42 (x) S 1 42 42 0 1 2", Stat{}, false},
		{"nothing after comm", "42 (x)", Stat{}, false},
		{"a state that is no letter", ")\x00 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0", Stat{}, false},
		{"a ppid that is no number", "42 (x) S one 42 42" + tail, Stat{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseStat(42, []byte(c.line))
			assert.Equal(t, c.ok, ok, "%q", c.line)
			assert.Equal(t, c.want, got, "%q", c.line)
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (sleep) S 1 42 42" + tail))
	f.Add([]byte("42 (a) 1 2 (b) R 7 8 9" + tail))
	f.Add([]byte("42 ())"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := parseStat(7, b)
		if ok {
			assert.Equal(t, 7, s.PID, "the pid is the one asked for")
			assert.NotZero(t, s.State, "a state")
		} else {
			assert.Equal(t, Stat{}, s, "nothing when not ok")
		}
	})
}

// TestReadStat: a child in a session of its own, under a command name
// that holds spaces and parentheses, and this process.
func TestReadStat(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("needs sleep(1)")
	}
	odd := filepath.Join(t.TempDir(), "a) 1 2 (b")
	require.NoError(t, os.Symlink(sleep, odd))
	cmd := exec.Command(odd, "10")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid

	p, ok := ReadStat(pid)
	require.True(t, ok, "the child runs")
	assert.Equal(t, Stat{PID: pid, PPID: os.Getpid(), PGID: pid, SID: pid, State: p.State, Start: p.Start}, p)
	assert.Contains(t, "RSD", string(p.State), "running or sleeping")
	assert.NotZero(t, p.Start, "a start time")

	self, ok := ReadStat(os.Getpid())
	require.True(t, ok)
	assert.Equal(t, os.Getppid(), self.PPID)
	assert.Equal(t, syscall.Getpgrp(), self.PGID)
	assert.Contains(t, "RSD", string(self.State), "this process runs (its main thread may sleep meanwhile)")
	assert.LessOrEqual(t, self.Start, p.Start, "started before its child")

	_, ok = ReadStat(-1)
	assert.False(t, ok, "no such process")
}

// TestAlive: a process runs until it exits; a zombie (exited, not yet
// reaped) no longer counts, and a reaped one is gone.
func TestAlive(t *testing.T) {
	assert.True(t, Alive(os.Getpid()), "this process runs")
	assert.False(t, Alive(-1), "no such process")

	cmd := exec.Command("sh", "-c", "read x; exit 0")
	w, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	assert.True(t, Alive(pid), "the child runs")
	w.Close() // it exits; nobody reaps it yet
	require.Eventually(t, func() bool { p, _ := ReadStat(pid); return p.State == 'Z' },
		10*time.Second, 5*time.Millisecond, "the child becomes a zombie")
	assert.False(t, Alive(pid), "a zombie is not alive")
	require.NoError(t, cmd.Wait())
	assert.False(t, Alive(pid), "a reaped child is gone")
}
