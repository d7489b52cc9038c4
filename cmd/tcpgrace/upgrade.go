package main

import (
	"context"
	"io"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// defaultUpgradeTimeout bounds an upgrade when -timeout is not given: the
// library's default ready timeout (a minute) and a ready grace fit in it,
// and a server that never answers (stopped, hung) is given up on.
const defaultUpgradeTimeout = 2 * time.Minute

// upgradeCmd is tcpgrace upgrade: exit 0 and the new generation's pid
// once it serves, 1 with the reason when the upgrade failed, 4 when it
// was refused for now.
func upgradeCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("upgrade", "-control PATH [-timeout DUR]",
		"Starts the next generation and waits until it serves (exit 0, one line of\nJSON: pid, generation, old_pid, handoff_ms) or has failed (exit 1, the old\ngeneration serves on).", stderr)
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
		return f.noResult()
	}
	return printJSON(stdout, rep.Upgrade)
}
