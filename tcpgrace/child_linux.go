package tcpgrace

import (
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is a started next generation. It is started with
// syscall.ForkExec over bare fds, and watched with waitid and wait4, not
// os/exec: os.StartProcess wants an *os.File per fd (see handed), and on
// first use it tests pidfd support with a fork of its own.
type process struct {
	pid    int
	mu     sync.Mutex
	reaped bool // the pid may name another process now: kill signals nothing
}

// startProcess starts path with argv and env. Its fd 0, 1 and 2 are ours
// (real files, so that it outlives us) and h's entries follow in order
// from fd 3. The caller still owns h's entries.
func startProcess(path string, argv, env []string, h *handed) (*process, error) {
	var pid int
	err := h.pin(func(fds []int) error {
		files := make([]uintptr, 0, 3+len(fds))
		files = append(files, 0, 1, 2)
		for _, fd := range fds {
			files = append(files, uintptr(fd))
		}
		var err error
		if pid, err = syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: files}); err != nil {
			return &os.PathError{Op: "fork/exec", Path: path, Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &process{pid: pid}, nil
}

// wait waits for the process to exit and reaps it: nil for status 0, an
// error that says the status otherwise ("exit status 3", "signal:
// killed"), as os/exec says it.
func (p *process) wait() error {
	// Wait first without reaping, so that kill, which holds mu, never
	// signals a pid that a reaped process gave back.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	p.reaped = true
	p.mu.Unlock()
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(p.pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("wait4", err)
		}
		break
	}
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	return exitError(ws)
}

// kill sends SIGKILL, unless the process was reaped.
func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// file is what the process runs, for the log: its executable as the
// kernel opened it (every symlink followed when exec ran), or path.
func (p *process) file(path string) string {
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/exe"); err == nil {
		return exe
	}
	return path
}

// exitError is a process's status other than exit 0, in os/exec's words.
type exitError syscall.WaitStatus

func (e exitError) Error() string {
	ws := syscall.WaitStatus(e)
	var s string
	switch {
	case ws.Exited():
		s = "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s = "signal: " + ws.Signal().String()
	default:
		s = "wait status " + strconv.Itoa(int(ws))
	}
	if ws.CoreDump() {
		s += " (core dumped)"
	}
	return s
}
