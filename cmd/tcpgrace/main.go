// Command tcpgrace talks to a running tcpgrace server through its control
// socket (tcpgrace.Options.Control), so that a deploy learns how an
// upgrade ended instead of firing a signal and hoping.
//
// Usage:
//
//	tcpgrace upgrade -control PATH [-timeout DUR]
//	tcpgrace status  -control PATH [-human]
//	tcpgrace stop    -control PATH [-wait [-timeout DUR]]
//	tcpgrace reload  -control PATH [-timeout DUR]
//	tcpgrace version
//
// The control path may come from TCPGRACE_CONTROL instead of -control.
// "tcpgrace COMMAND -h" lists a command's flags and the exit statuses.
//
// upgrade starts the next generation and waits until it serves or has
// failed: it prints one line of JSON (pid, generation, old_pid,
// handoff_ms) and exits 0 once the new generation serves, and exits 1
// with the reason on stderr when the upgrade failed (the old generation
// keeps serving). -timeout (default 2m, at most 24h) bounds the upgrade:
// the server cancels it then and kills the next generation, and a server
// that reads the request after this command gave up does not start it.
// status prints the serving generation as one JSON object (pid,
// generation, state, executable, listeners, connections, older
// generations still draining), or as text with -human. stop begins a
// graceful stop of the service and exits once draining has begun (during
// a ready grace the new generation is stopped too; its pid is printed).
// With -wait it then waits until every generation has exited: the one
// that replied and the older ones a status taken just before the stop
// listed as draining (their pids are watched with pidfds); it exits 0
// once all are gone and 1, naming those left, at -timeout (default 1m).
// When the replies' pids are in another pid namespace (pid_ns: a server
// in a container), they mean nothing here, and it waits instead until
// nothing listens on the control socket, which proves only that the
// process holding it has exited. reload runs the server's reload hook
// and exits 0 once it has returned, printing the pid and generation that
// reloaded; 1 with the hook's error, or when there is no hook. tcpgrace
// run forwards SIGHUP to its serving instance instead and replies once
// the signal was sent: it cannot know when the instance's reload is
// over. version prints the build: its version stamp, the module version,
// the VCS revision, its time and whether the tree was modified (as the
// Go toolchain recorded them), and the Go version; it needs no socket.
//
// Exit statuses, of every command but run, for a deploy to act on:
//
//	0  done
//	1  failed: the server tried and the operation failed (an upgrade's:
//	   the old generation serves on)
//	2  usage error: bad flags or arguments, an unknown command, or a
//	   request the server did not understand
//	3  cannot reach the server: no socket file, connection refused,
//	   permission denied (by the file's mode or by the server), a server
//	   run by neither root nor this user; nothing was sent
//	4  refused for now: another upgrade runs, not ready yet, too many
//	   generations draining, a ready grace, stopping: retry later
//	5  outcome unknown: the connection broke or timed out after the
//	   request was sent; the server may have carried it out (ask status)
//
// They come from the reply's code ("failed", "refused", "bad_request",
// "denied"); a server older than the codes sends none, and its failures
// exit 1. Before it sends anything, every command checks who listens on
// the socket (SO_PEERCRED): root or its own uid, or it exits 3 naming
// that uid and the path.
//
// As systemd's ExecReload=, systemctl reload waits for the upgrade and
// fails when it fails:
//
//	ExecReload=/usr/local/bin/tcpgrace upgrade -control /run/app/control.sock
//
// run is the supervisor, for containers and for programs in any language:
//
//	tcpgrace run [-listen [NAME=]URL]... [-control PATH] [-metrics ADDR] [-events PATH] [-pidfile PATH] [-ready-timeout DUR]
//	             [-stop-timeout|-drain-timeout DUR] [-ready-delay DUR] [-max-instances N] [-start-limit N] -- CMD [ARGS...]
//
// It holds the sockets, keeps a stable pid (it can be PID 1), and runs
// instances of CMD over them with systemd's LISTEN_FDS and NOTIFY_SOCKET;
// SIGUSR1 (or tcpgrace upgrade on its -control socket) upgrades the
// instance, SIGUSR2 the supervisor itself in place. A command that is
// never ready is started -start-limit times in a row (default 5, 0: no
// limit), then run exits 1 with the last failure logged; once an instance
// has been ready, crashes are restarted with a backoff for good. With
// -metrics HOST:PORT it answers GET /metrics with its own metrics
// (instances, restarts, crashes, upgrades) in Prometheus' text format. run
// exits with the status of the instance that served when it was stopped,
// 1 when it cannot start or gave up, 2 on a usage error.
// "tcpgrace run -h" lists the signals; the internal/supervisor package
// doc says how it works.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tcpgrace/tcpgrace/internal/supervisor"
)

// command is one subcommand: it parses its own flags and returns the
// exit status.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"upgrade": {"start the next generation and wait until it serves or failed", upgradeCmd},
	"status":  {"show the serving generation, its listeners and the older ones draining", statusCmd},
	"stop":    {"stop gracefully: return once draining has begun (-wait: once all exited)", stopCmd},
	"reload":  {"run the server's reload hook and wait until it returned", reloadCmd},
	"run":     {"supervise a server as a stable main process", runCmd},
	"version": {"print this build's version, VCS revision and Go version", versionCmd},
}

// order is the order of the commands in the usage text.
var order = []string{"upgrade", "status", "stop", "reload", "run", "version"}

func main() { os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr)) }

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	case supervisor.ExecArg: // run's exec helper, not a command
		return supervisor.ExecApp(args[1:])
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tcpgrace: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tcpgrace COMMAND -control PATH [flags]   (or TCPGRACE_CONTROL=PATH)")
	fmt.Fprintln(w, "commands:")
	for _, name := range order {
		fmt.Fprintf(w, "  %-8s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "tcpgrace COMMAND -h shows a command's flags and exit statuses")
}
