package main

import (
	"context"
	"io"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// defaultReloadTimeout bounds a reload when -timeout is not given.
const defaultReloadTimeout = time.Minute

// reloadCmd is tcpgrace reload: the server runs its reload hook and
// replies when it has returned (tcpgrace run: once it sent SIGHUP to the
// serving instance); exit 0 and one line of JSON naming the process
// that reloaded, 1 with the hook's error (or that there is none), 4 when
// it was refused for now.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("reload", "-control PATH [-timeout DUR]",
		"Has the server reload its configuration in place (its reload hook; no new\n"+
			"process) and waits until the hook has returned: exit 0 and one line of JSON\n"+
			"(pid, generation), or exit 1 with the hook's error, or because there is no\n"+
			"hook. tcpgrace run forwards SIGHUP to the serving instance instead and\n"+
			"replies once it was sent: it cannot know when the instance's reload is over.", stderr)
	timeout := f.Duration("timeout", defaultReloadTimeout, "give up waiting for the reply after this long (exit 5: the reload may still run)")
	if code, ok := f.parse(args); !ok {
		return code
	}
	if *timeout < time.Millisecond {
		code, _ := f.usageError("-timeout %v: give a positive duration", *timeout)
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdReload})
	if code != exitOK {
		return code
	}
	if rep.Reload == nil {
		return f.noResult()
	}
	return printJSON(stdout, rep.Reload)
}
