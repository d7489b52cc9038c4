//go:build linux

package wire

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// pipeInode is the inode of the pipe behind f.
func pipeInode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	require.NoError(t, err, "fstat of the pipe")
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestLeaveBeforeReady(t *testing.T) {
	r, wfd := readyPipe(t)
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd})
	assert.NoError(t, f.Leave(), "Leave before Ready does nothing")
	assertCloseOnExec(t, wfd, "the ready fd after an early Leave")
	require.NoError(t, f.Fail(errors.New("stopped before ready")), "Fail still works after an early Leave")
	assert.Equal(t, string(rune(FailByte))+"stopped before ready", readAll(t, r),
		"a generation that never said ready has nothing to leave: the parent reads its failure only")
}

func TestLeaveWithoutParent(t *testing.T) {
	f := openFiles(t, nil)
	assert.NoError(t, f.Ready(), "Ready without a parent does nothing")
	assert.NoError(t, f.Leave(), "Leave without a parent does nothing")
}

// TestReadyWithoutReader: a parent that died (or stopped listening) makes
// Ready fail with EPIPE and close the pipe; Leave then does nothing.
func TestReadyWithoutReader(t *testing.T) {
	r, wfd := readyPipe(t)
	require.NoError(t, r.Close(), "the parent's end goes")
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd})
	err := f.Ready()
	assert.ErrorIs(t, err, syscall.EPIPE, "Ready to a pipe nobody reads fails with EPIPE")
	assertClosed(t, wfd, "the ready fd after a failed Ready")
	assert.NoError(t, f.Leave(), "Leave after a failed Ready does nothing")
	assert.Error(t, f.Ready(), "a second Ready still fails")
}

func TestOpenChecksPipeInode(t *testing.T) {
	r, wfd := readyPipe(t)
	ino := pipeInode(t, r)
	f := openFiles(t, &Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd, Pipe: ino})
	assert.True(t, f.HasParent(), "the ready fd is the pipe named")

	other, _ := readyPipe(t)
	_, wfd2 := readyPipe(t)
	closeOnCleanup(t, wfd2) // Open rejects it: still ours
	f, err := Open(&Env{Source: EnvFDs, Generation: 2, ReadyFD: wfd2, Pipe: pipeInode(t, other)})
	assert.Nil(t, f, "Open must fail when the ready fd is another pipe than the one named")
	assertDecodeError(t, err, ErrBadFD, EnvFDs, -1, fmt.Sprintf("ready fd %d: pipe inode", wfd2))
}

func TestOwned(t *testing.T) {
	ux, path := listenUnix(t)
	web := listenTCP(t, "tcp", "127.0.0.1:0")
	owned := []UnixFile{{Name: "ctl", FileID: sockfd.FileID{Dev: 7, Ino: 42}}}
	env := &Env{Source: EnvFDs, Generation: 2, ReadyFD: -1, Owned: owned, Entries: []Entry{
		{Name: "ctl", FD: dupFD(t, ux.(syscall.Conn)), Network: "unix", Address: path},
		{Name: "web", FD: dupFD(t, web.(syscall.Conn)), Network: "tcp", Address: "127.0.0.1:0"},
	}}
	f := openFiles(t, env)
	owned[0].Ino = 1 // Open copied the list
	got, ok := f.Owned("ctl")
	assert.True(t, ok, "ctl's file was created by the chain")
	assert.Equal(t, UnixFile{Name: "ctl", FileID: sockfd.FileID{Dev: 7, Ino: 42}}, got, "Owned returns device and inode as handed on")
	_, ok = f.Owned("web")
	assert.False(t, ok, "web has no file")
	_, ok = openFiles(t, nil).Owned("ctl")
	assert.False(t, ok, "a first start owns nothing")
}

func TestProbePipe(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err, "creating a pipe")
	t.Cleanup(func() { r.Close(); w.Close() })
	ino := pipeInode(t, r)
	wfd, rfd := int(dupFD(t, w)), int(dupFD(t, r))
	closeOnCleanup(t, wfd, rfd)

	same, noReader := probePipe(wfd, ino)
	assert.True(t, same, "the write end of the pipe named")
	assert.False(t, noReader, "while its read ends are open, the pipe has a reader")
	same, _ = probePipe(wfd, ino+1)
	assert.False(t, same, "another inode is another pipe")
	same, _ = probePipe(rfd, ino)
	assert.False(t, same, "the read end is not the readiness pipe's end")
	same, _ = probePipe(tempFile(t), ino)
	assert.False(t, same, "a regular file is no pipe")
	same, _ = probePipe(closedFD(t), ino)
	assert.False(t, same, "a closed fd is no pipe")

	require.NoError(t, r.Close(), "closing a read end")
	require.NoError(t, unix.Close(rfd), "closing the other read end")
	same, noReader = probePipe(wfd, ino)
	assert.True(t, same, "still the pipe named")
	assert.True(t, noReader, "with every read end closed, nobody reads the pipe")
}

// runWithPipe runs the take helper with env added, fds 3 (the write end
// of a pipe the test made) and extra from fd 4; with reader unset the
// pipe's read end is closed before the helper starts, as a dead parent's
// is. It returns the helper's report and what it wrote on the pipe.
func runWithPipe(t *testing.T, mode string, env func(ino uint64) string, reader bool, extra ...*os.File) childResult {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err, "creating the readiness pipe")
	defer r.Close()
	defer w.Close()
	ino := pipeInode(t, r)
	if !reader {
		require.NoError(t, r.Close(), "the writer dies: its read end goes")
	}
	cmd, vars := helperCmd(t, mode)
	res := runChild(t, cmd, append(vars, EnvFDs+"="+env(ino)), false, append([]*os.File{w}, extra...)...)
	if reader {
		require.NoError(t, w.Close(), "closing our write end")
		require.NoError(t, r.SetReadDeadline(time.Now().Add(ioTimeout)), "setting a read deadline")
		res.Pipe = readAll(t, r)
	}
	return res
}

// deadPID is the pid of a process that has run and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	require.NoError(t, cmd.Run(), "running a short-lived process")
	return cmd.Process.Pid
}

// TestTakeAfterParentDied is the child side of issue #10's first fault:
// the parent that wrote the value died while starting this process, so
// this process's parent pid is no longer the writer's. The value names
// the readiness pipe, fd 3 is that pipe and nobody reads it: Take hands
// out the sockets, and Ready finds no reader.
func TestTakeAfterParentDied(t *testing.T) {
	needShell(t)
	web, ln := listenerFile(t, "web")
	spare, _ := listenerFile(t, "spare")
	writer := deadPID(t)
	res := runWithPipe(t, helperTake, func(ino uint64) string {
		env := handOff()
		env.Pipe = ino
		return env.Encode(writer)
	}, false, web, spare)
	require.Empty(t, res.TakeErr, "Take in the orphaned child must succeed")
	assert.Empty(t, res.EnvLeft, "Take must remove TCPGRACE_FDS")
	assert.Equal(t, EnvFDs, res.Source, "the orphan takes the sockets it was handed")
	assert.Equal(t, 4, res.Generation, "the generation must be the one written")
	assert.True(t, res.HasParent, "it was started by a tcpgrace parent")
	assert.Equal(t, ln.Addr().String(), res.Addr, "the claimed listener must be the one handed on")
	assert.Contains(t, res.ReadyErr, "broken pipe", "Ready finds nobody reading: EPIPE, which the caller tolerates")
}

// TestTakeStaleWithPipe: values that name their readiness pipe are still
// ignored where they are stale: in a grandchild that got fd 3 and 4 from
// its parent (the writer still reads the pipe and is not its parent), and
// in a direct child whose fd 3 is another pipe.
func TestTakeStaleWithPipe(t *testing.T) {
	t.Run("grandchild holding the pipe", func(t *testing.T) {
		web, _ := listenerFile(t, "web")
		res := runWithPipe(t, helperStale, func(ino uint64) string {
			return (&Env{Generation: 2, ReadyFD: 3, Pipe: ino, Entries: handOff().Entries[:1]}).Encode(os.Getpid())
		}, true, web)
		assert.Empty(t, res.TakeErr, "a stale value is not an error")
		assert.Empty(t, res.Source, "a grandchild must not inherit through its grandparent's value")
		assert.False(t, res.HasParent, "a stale ready fd must not be taken as a parent")
		assert.Empty(t, res.Pipe, "the grandchild must not write to its grandparent's pipe")
	})
	t.Run("another pipe", func(t *testing.T) {
		web, _ := listenerFile(t, "web")
		other, _, err := os.Pipe()
		require.NoError(t, err, "creating another pipe")
		t.Cleanup(func() { other.Close() })
		res := runWithPipe(t, helperTake, func(uint64) string {
			return (&Env{Generation: 2, ReadyFD: 3, Pipe: pipeInode(t, other), Entries: handOff().Entries[:1]}).Encode(os.Getpid())
		}, true, web)
		assert.Empty(t, res.TakeErr, "a value naming another pipe is not an error")
		assert.Empty(t, res.Source, "a value naming another pipe than fd 3 is not ours")
		assert.Empty(t, res.Pipe, "nothing is written to a pipe that is not the one named")
	})
}

// TestTakeWithPipe: a direct child of the writer, on the pipe named, takes
// the sockets and says ready on it.
func TestTakeWithPipe(t *testing.T) {
	needShell(t)
	web, _ := listenerFile(t, "web")
	spare, _ := listenerFile(t, "spare")
	res := runWithPipe(t, helperTake, func(ino uint64) string {
		env := handOff()
		env.Pipe = ino
		return env.Encode(os.Getpid())
	}, true, web, spare)
	require.Empty(t, res.TakeErr, "Take in a direct child must succeed")
	assert.Equal(t, EnvFDs, res.Source, "the sockets must come from TCPGRACE_FDS")
	assert.Empty(t, res.ReadyErr, "Ready must succeed")
	assert.Equal(t, string(rune(ReadyByte)), res.Pipe, "the parent reads ReadyByte, then EOF at the child's exit")
}
