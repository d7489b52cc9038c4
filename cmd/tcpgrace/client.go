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

// Exit statuses of every command but run (exitCodesHelp says them to
// the user).
const (
	exitOK          = 0 // done
	exitFailed      = 1 // the server tried and failed (the reason is on stderr)
	exitUsage       = 2 // a usage error, or a request the server did not understand
	exitUnreachable = 3 // the request was not sent: no server, or not one we may or will ask
	exitRefused     = 4 // refused for now: retry later
	exitUnknown     = 5 // sent, and no reply: the server may have carried it out
)

// exitCodesHelp ends the help of every command but run.
const exitCodesHelp = `Exit status:
  0  done
  1  failed: the server tried and the operation failed (a failed upgrade:
     the old generation serves on)
  2  usage error: bad flags or arguments, or a request the server did not
     understand
  3  cannot reach the server: no socket file, connection refused, permission
     denied, a server run by neither root nor this user; nothing was sent
  4  refused for now: another upgrade runs, not ready yet, too many
     generations draining, a ready grace, stopping: retry later
  5  outcome unknown: the connection broke or timed out after the request
     was sent; the server may have carried it out (see tcpgrace status)
`

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

// newFlags is the flag set of command name, with -control; its help
// shows synopsis (the flags after the command's name) and what the
// command does, then the flags and the exit statuses.
func newFlags(name, synopsis, what string, stderr io.Writer) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("tcpgrace "+name, flag.ContinueOnError), name: name}
	f.SetOutput(stderr)
	f.StringVar(&f.control, "control", os.Getenv(envControl), "the server's control socket (default $"+envControl+")")
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "usage: tcpgrace %s %s\n\n%s\n\nFlags:\n", name, synopsis, what)
		f.PrintDefaults()
		fmt.Fprint(f.Output(), "\n"+exitCodesHelp)
	}
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
		return nil, errorExit(err)
	}
	if !rep.OK {
		fmt.Fprintf(f.Output(), "tcpgrace %s: %s\n", f.name, rep.Error)
		return nil, replyExit(rep.Code)
	}
	if ns, ours := replyNamespace(rep), control.PIDNamespace(); ns != "" && ours != "" && ns != ours {
		fmt.Fprintf(f.Output(), "tcpgrace %s: note: the pids in the reply are in pid namespace %s, not in ours (%s)\n", f.name, ns, ours)
	}
	return rep, exitOK
}

// errorExit is the exit status of an error of control.Do: the request
// was sent (the outcome is unknown) or not (the server is out of reach).
func errorExit(err error) int {
	if errors.Is(err, control.ErrOutcomeUnknown) {
		return exitUnknown
	}
	return exitUnreachable
}

// replyExit is the exit status of a failed reply's code. A server older
// than the codes sends none, and a newer one may send a code this command
// does not know: both exit as a failure.
func replyExit(code string) int {
	switch code {
	case control.CodeRefused:
		return exitRefused
	case control.CodeBadRequest:
		return exitUsage
	case control.CodeDenied:
		return exitUnreachable
	}
	return exitFailed
}

// noResult reports a reply that succeeded without the command's result:
// a server that answered another command in its place (one that does not
// know this one). It returns exitUsage: the server did not understand.
func (f *flags) noResult() int {
	fmt.Fprintf(f.Output(), "tcpgrace %s: %s: the server replied without the %s result: it does not know the command\n",
		f.name, f.control, f.name)
	return exitUsage
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
	case rep.Reload != nil:
		return rep.Reload.PIDNamespace
	}
	return ""
}

// printJSON writes v, one of the protocol's results, as one line of JSON.
func printJSON(w io.Writer, v any) int {
	line, _ := json.Marshal(v) // plain structs: never fails
	fmt.Fprintf(w, "%s\n", line)
	return exitOK
}
