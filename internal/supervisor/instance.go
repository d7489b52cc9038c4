//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// phase is where an instance is in its life.
type phase int

const (
	phaseStarting phase = iota // started, not ready yet
	phaseServing               // ready: the one instance that serves
	phaseDraining              // told to stop (or stopping on its own), until it exits
)

func (p phase) String() string {
	switch p {
	case phaseStarting:
		return "starting"
	case phaseServing:
		return "serving"
	}
	return "draining"
}

// instance is one run of the command. Only the supervisor's loop touches
// it.
type instance struct {
	pid     int   // the process the supervisor started: its child, leader of its own process group
	main    int   // the process that counts: pid, or the one it named with MAINPID=
	gen     int   // 1 for the first instance, one more for each next one
	phase   phase // see phase
	since   time.Time
	status  string // its last STATUS=
	reason  string // why it was started
	readyBy time.Time
	delayAt time.Time        // with a ReadyDelay: ready then, if still running
	killAt  time.Time        // draining: its process group is killed then
	killed  bool             // SIGKILL was sent
	pidGone bool             // pid exited; main, named with MAINPID=, runs on
	termed  bool             // ended: SIGTERM was sent to what is left of it
	waiters []chan<- outcome // Upgrade calls waiting for this start
	upgrade bool             // started by an upgrade request (not a first start or a restart)
}

// selfExe runs the supervisor's own image, whatever has been renamed over
// its path since: the exec helper must speak this version's protocol.
const selfExe = "/proc/self/exe"

// spawn starts one instance of the command: the supervisor's own binary
// in the exec helper mode ([ExecApp]), which sets LISTEN_PID to its pid and
// execs the command in that same process. The sockets are fds 3 onwards,
// stdio is the supervisor's, and the instance leads a process group of
// its own, so that a final SIGKILL also reaches the processes it started,
// and a session of its own, which tells the processes it started that
// moved to another group from any other (see census).
// It returns the pid and the path that runs.
func (s *Supervisor) spawn() (int, string, error) {
	path, err := exec.LookPath(s.cfg.Command[0])
	if err != nil {
		return 0, "", fmt.Errorf("command %q: %w", s.cfg.Command[0], err)
	}
	argv := append([]string{"tcpgrace", ExecArg, path}, s.cfg.Command...)
	files := []uintptr{0, 1, 2}
	for _, sk := range s.socks {
		files = append(files, uintptr(sk.fd))
	}
	pid, err := syscall.ForkExec(selfExe, argv, &syscall.ProcAttr{
		Env: s.env, Files: files, Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return 0, "", fmt.Errorf("starting the exec helper for %s: %w", path, err)
	}
	return pid, path, nil
}

// instanceEnv is the environment of every instance: the supervisor's,
// without any service manager's variables, plus the sockets (LISTEN_PID
// is added by the exec helper) and the supervisor's notify socket.
func instanceEnv(socks []*socket, notifyPath string) []string {
	drop := []string{wire.EnvListenPID, wire.EnvListenFDs, wire.EnvListenFDNames, sdnotify.EnvNotifySocket, sdnotify.EnvWatchdogUsec,
		sdnotify.EnvWatchdogPID, stateEnv, checkEnv}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	names := make([]string, len(socks))
	for i, sk := range socks {
		names[i] = sk.Name
	}
	return append(env,
		wire.EnvListenFDs+"="+strconv.Itoa(len(socks)),
		wire.EnvListenFDNames+"="+strings.Join(names, ":"),
		sdnotify.EnvNotifySocket+"="+notifyPath)
}

// signal sends sig to the instance's main process.
func (in *instance) signal(sig syscall.Signal) error {
	return unix.Kill(in.main, sig)
}

// kill sends SIGKILL to the instance's process group, and to its main
// process if that is another one.
func (in *instance) kill() {
	unix.Kill(-in.pid, unix.SIGKILL)
	if in.main != in.pid {
		unix.Kill(in.main, unix.SIGKILL)
	}
	in.killed = true
}

// exitCode is a wait status as a shell shows it: the exit status, or
// 128 plus the signal that killed the process.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// describe says how a process ended.
func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
