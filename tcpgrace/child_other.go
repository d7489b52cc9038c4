//go:build !linux

package tcpgrace

import (
	"os"
	"path/filepath"
)

// process is a started next generation, an os.Process.
type process struct {
	pid int
	p   *os.Process
}

// startProcess starts path with argv and env. Its fd 0, 1 and 2 are ours
// (real files, so that it outlives us) and h's entries follow in order
// from fd 3. The caller still owns h's entries.
func startProcess(path string, argv, env []string, h *handed) (*process, error) {
	handed, err := h.files()
	if err != nil {
		return nil, err
	}
	files := append([]*os.File{os.Stdin, os.Stdout, os.Stderr}, handed...)
	p, err := os.StartProcess(path, argv, &os.ProcAttr{Env: env, Files: files})
	if err != nil {
		return nil, err
	}
	return &process{pid: p.Pid, p: p}, nil
}

// wait waits for the process to exit: nil for status 0, an error that
// says the status otherwise.
func (p *process) wait() error {
	ps, err := p.p.Wait()
	if err != nil {
		return err
	}
	if !ps.Success() {
		return exitError{ps}
	}
	return nil
}

// kill kills the process.
func (p *process) kill() { p.p.Kill() }

// file is what the process runs, for the log.
func (p *process) file(path string) string { return resolved(path) }

// exitError is a process's status other than success.
type exitError struct{ ps *os.ProcessState }

func (e exitError) Error() string { return e.ps.String() }

// resolved is path with every symlink followed, or path itself if that
// fails (exec then reports why).
func resolved(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}
