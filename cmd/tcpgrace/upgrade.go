package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// defaultUpgradeTimeout bounds an upgrade when -timeout is not given: the
// library's default ready timeout (a minute) and a ready grace fit in it,
// and a server that never answers (stopped, hung) is given up on.
const defaultUpgradeTimeout = 2 * time.Minute

// upgradeCmd is tcpgrace upgrade: exit 0 and the new generation's pid
// once it serves, 1 with the reason when the upgrade failed.
func upgradeCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("upgrade", stderr)
	timeout := f.Duration("timeout", defaultUpgradeTimeout, "give up after this long: the server cancels the upgrade and kills the next generation, and never starts it if this command is gone by the time it reads the request")
	if code, ok := f.parse(args); !ok {
		return code
	}
	if *timeout < time.Millisecond || timeout.Milliseconds() > control.MaxTimeoutMS {
		code, _ := f.usageError("-timeout %v: give a duration from 1ms to 24h", *timeout)
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+replyMargin)
	defer cancel()
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
