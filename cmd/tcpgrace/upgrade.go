package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// upgradeCmd is tcpgrace upgrade: exit 0 and the new generation's pid
// once it serves, 1 with the reason when the upgrade failed.
func upgradeCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("upgrade", stderr)
	timeout := f.Duration("timeout", 0, "give up after this long: the server cancels the upgrade and kills the next generation (default: the server's ready timeout)")
	if code, ok := f.parse(args); !ok {
		return code
	}
	if *timeout < 0 || (*timeout > 0 && *timeout < time.Millisecond) {
		code, _ := f.usageError("-timeout %v: give at least 1ms, or 0 for the server's ready timeout", *timeout)
		return code
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout+replyMargin)
		defer cancel()
	}
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdUpgrade, TimeoutMS: timeout.Milliseconds()})
	if code != exitOK {
		return code
	}
	if rep.Upgrade == nil {
		fmt.Fprintf(stderr, "tcpgrace upgrade: %s: a reply without the upgrade's result\n", f.control)
		return exitUsage
	}
	return printJSON(stdout, rep.Upgrade)
}
