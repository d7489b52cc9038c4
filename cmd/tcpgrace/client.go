package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// Exit statuses.
const (
	exitOK     = 0 // done
	exitFailed = 1 // the server answered: it failed (the reason is on stderr)
	exitUsage  = 2 // a usage error, or no answer at all
)

// envControl names the control socket when -control is not given.
const envControl = "TCPGRACE_CONTROL"

// requestTimeout bounds status and stop, which the server answers at once.
const requestTimeout = 10 * time.Second

// replyMargin is how long upgrade waits past its -timeout for the reply
// to the upgrade the server cancelled then.
const replyMargin = 5 * time.Second

// flags is the flag set of one command, with -control.
type flags struct {
	*flag.FlagSet
	name    string
	control string
}

func newFlags(name string, stderr io.Writer) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("tcpgrace "+name, flag.ContinueOnError), name: name}
	f.SetOutput(stderr)
	f.StringVar(&f.control, "control", os.Getenv(envControl), "the server's control socket (default $"+envControl+")")
	return f
}

// parse parses args; ok is false when the command must exit with code.
func (f *flags) parse(args []string) (code int, ok bool) {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	switch {
	case f.NArg() > 0:
		return f.usageError("unexpected argument %q", f.Arg(0))
	case f.control == "":
		return f.usageError("no control socket: give -control PATH or set %s", envControl)
	}
	return exitOK, true
}

func (f *flags) usageError(format string, args ...any) (int, bool) {
	fmt.Fprintf(f.Output(), "tcpgrace %s: %s\n", f.name, fmt.Sprintf(format, args...))
	f.Usage()
	return exitUsage, false
}

// ask sends req and returns the successful reply, or the exit status
// after the error was written to stderr.
func (f *flags) ask(ctx context.Context, req control.Request) (*control.Reply, int) {
	rep, err := control.Do(ctx, f.control, req)
	if err != nil {
		fmt.Fprintf(f.Output(), "tcpgrace %s: %s: %v\n", f.name, f.control, err)
		return nil, exitUsage
	}
	if !rep.OK {
		fmt.Fprintf(f.Output(), "tcpgrace %s: %s\n", f.name, rep.Error)
		return nil, exitFailed
	}
	if ns, ours := replyNamespace(rep), control.PIDNamespace(); ns != "" && ours != "" && ns != ours {
		fmt.Fprintf(f.Output(), "tcpgrace %s: note: the pids in the reply are in pid namespace %s, not in ours (%s)\n", f.name, ns, ours)
	}
	return rep, exitOK
}

// replyNamespace is the pid namespace a reply's pids are in, "" if it
// does not say.
func replyNamespace(rep *control.Reply) string {
	switch {
	case rep.Upgrade != nil:
		return rep.Upgrade.PIDNamespace
	case rep.Status != nil:
		return rep.Status.PIDNamespace
	case rep.Stop != nil:
		return rep.Stop.PIDNamespace
	}
	return ""
}

// printJSON writes v, one of the protocol's results, as one line of JSON.
func printJSON(w io.Writer, v any) int {
	line, _ := json.Marshal(v) // plain structs: never fails
	fmt.Fprintf(w, "%s\n", line)
	return exitOK
}
