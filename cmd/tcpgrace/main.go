// Command tcpgrace runs servers that are replaced without dropping a
// connection.
//
// Usage:
//
//	tcpgrace run [flags] -- CMD [ARGS...]
//
// run is a supervisor with a stable pid for containers and for programs
// in any language: it holds the listening sockets and runs CMD over them
// with systemd's protocols (LISTEN_FDS, NOTIFY_SOCKET); see
// "tcpgrace run -h".
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tcpgrace/tcpgrace/internal/supervisor"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		os.Exit(runCommand(args))
	case supervisor.ExecArg: // run's exec helper, not a command
		os.Exit(supervisor.ExecApp(args))
	case "help", "-h", "-help", "--help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "tcpgrace: unknown command %q\n", cmd)
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tcpgrace run [flags] -- CMD [ARGS...]   (tcpgrace run -h for the flags)")
}
