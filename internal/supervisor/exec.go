//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// ExecArg, as the first argument of the supervisor's own binary, makes it
// the exec helper ([ExecApp]) instead of a command. It is not meant to be
// typed.
const ExecArg = "__exec-with-listen-pid"

// ExecApp is the exec helper: the supervisor starts each instance as its
// own binary with [ExecArg], PATH, ARGV0 and ARGS, and ExecApp sets
// LISTEN_PID to its own pid and execs PATH in the same process, which
// thereby finds LISTEN_PID naming itself, as sd_listen_fds(3) requires.
// No process can set a variable in a child after the fork but the child
// itself, and Go's fork and exec run nothing in between. The sockets
// stay where the supervisor put them, fds 3 onwards; the Go runtime opens
// its own files close-on-exec above them. ExecApp returns only on
// failure, with status 127, as a shell does for a command it cannot run.
func ExecApp(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "tcpgrace run: exec helper: want PATH ARGV0 [ARGS...]")
		return 127
	}
	env := append(os.Environ(), wire.EnvListenPID+"="+strconv.Itoa(os.Getpid()))
	err := syscall.Exec(args[0], args[1:], env)
	fmt.Fprintf(os.Stderr, "tcpgrace run: exec %s: %v\n", args[0], err)
	return 127
}
