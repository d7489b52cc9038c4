package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// defaultStopWait bounds stop -wait when -timeout is not given: the
// library's default drain timeout (30 s) and tcpgrace run's default
// -stop-timeout fit in it.
const defaultStopWait = time.Minute

// stopCmd is tcpgrace stop: the serving generation begins to drain, as on
// SIGTERM; it prints its pid and the connections it drains once draining
// has begun, and with -wait exits only once every generation has exited.
func stopCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("stop", "-control PATH [-wait [-timeout DUR]]",
		"Stops the service gracefully, as SIGTERM does: prints one line of JSON (pid,\n"+
			"connections) once draining has begun. With -wait it then waits until every\n"+
			"generation has exited: the one that replied, and the older ones a status\n"+
			"taken just before the stop listed as draining (exit 0 once all are gone,\n"+
			"exit 1 naming those left at -timeout). When the reply's pids are in another\n"+
			"pid namespace (a server in a container), it waits instead until nothing\n"+
			"listens on the control socket any more: that proves only that the process\n"+
			"holding the socket has exited.", stderr)
	wait := f.Bool("wait", false, "after the stop, wait until every generation has exited")
	timeout := f.Duration("timeout", defaultStopWait, "with -wait: how long to wait for the generations to exit")
	if code, ok := f.parse(args); !ok {
		return code
	}
	if code, ok := f.checkStopFlags(*wait, *timeout); !ok {
		return code
	}
	var w *exitWaiter
	if *wait {
		var code int
		if w, code = f.watchGenerations(); code != exitOK {
			return code
		}
		defer w.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdStop})
	if code != exitOK {
		return code
	}
	if rep.Stop == nil {
		return f.noResult()
	}
	printJSON(stdout, rep.Stop)
	if w == nil {
		return exitOK
	}
	w.add(rep.Stop.PID, rep.Stop.PIDNamespace)
	return f.waitGone(w, *timeout)
}

// checkStopFlags refuses a -timeout without -wait, and one that is not
// positive.
func (f *flags) checkStopFlags(wait bool, timeout time.Duration) (int, bool) {
	given := false
	f.Visit(func(fl *flag.Flag) { given = given || fl.Name == "timeout" })
	switch {
	case given && !wait:
		return f.usageError("-timeout bounds -wait: give -wait too")
	case timeout <= 0:
		return f.usageError("-timeout %v: give a positive duration", timeout)
	}
	return exitOK, true
}

// watchGenerations asks for the status, and watches the process that
// answered and the older generations it lists as draining, so that their
// exits are seen even if their pids are reused later.
func (f *flags) watchGenerations() (*exitWaiter, int) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdStatus})
	if code != exitOK {
		return nil, code
	}
	if rep.Status == nil {
		return nil, f.noResult()
	}
	w := newExitWaiter(f.control)
	w.add(rep.Status.PID, rep.Status.PIDNamespace)
	for _, o := range rep.Status.Older {
		w.add(o.PID, rep.Status.PIDNamespace)
	}
	return w, exitOK
}

// waitGone waits up to timeout for every watched generation to exit: 0
// once all have, 1 (naming those left) at the timeout.
func (f *flags) waitGone(w *exitWaiter, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	left := w.wait(ctx)
	if left == "" {
		return exitOK
	}
	fmt.Fprintf(f.Output(), "tcpgrace stop: -wait: %s after -timeout %v\n", left, timeout)
	return exitFailed
}
