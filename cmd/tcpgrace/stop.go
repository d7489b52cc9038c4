package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// stopCmd is tcpgrace stop: the serving generation begins to drain, as on
// SIGTERM; it exits once draining has begun and prints its pid and the
// connections it drains.
func stopCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("stop", stderr)
	if code, ok := f.parse(args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdStop})
	if code != exitOK {
		return code
	}
	if rep.Stop == nil {
		fmt.Fprintf(stderr, "tcpgrace stop: %s: a reply without the stop's result\n", f.control)
		return exitUsage
	}
	return printJSON(stdout, rep.Stop)
}
