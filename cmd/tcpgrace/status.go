package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/text"
)

// statusCmd is tcpgrace status: the serving generation as JSON, or as
// text with -human.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	f := newFlags("status", "-control PATH [-human]",
		"Prints the serving generation as one line of JSON (pid, generation, state,\nexecutable, listeners, connections, older generations still draining, and the\nservice's totals since its first start).", stderr)
	human := f.Bool("human", false, "print text for people instead of JSON")
	if code, ok := f.parse(args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rep, code := f.ask(ctx, control.Request{Cmd: control.CmdStatus})
	if code != exitOK {
		return code
	}
	if rep.Status == nil {
		return f.noResult()
	}
	if *human {
		printHuman(stdout, rep.Status)
		return exitOK
	}
	return printJSON(stdout, rep.Status)
}

func printHuman(w io.Writer, st *control.Status) {
	if st.Supervisor != nil { // the pid is tcpgrace run's, the generation the serving instance's
		fmt.Fprintf(w, "tcpgrace run pid %d, %s since %s; serving generation %d\n", st.PID, st.State,
			st.Started.Format(time.RFC3339), st.Generation)
	} else {
		fmt.Fprintf(w, "pid %d, generation %d, %s since %s\n", st.PID, st.Generation, st.State, st.Started.Format(time.RFC3339))
	}
	if st.PIDNamespace != "" {
		fmt.Fprintf(w, "pids in pid namespace %s", st.PIDNamespace)
		if ours := control.PIDNamespace(); ours != "" && ours != st.PIDNamespace {
			fmt.Fprintf(w, " (not ours, %s: they mean nothing here)", ours)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "executable %s", st.Executable)
	if st.File != "" && st.File != st.Executable {
		fmt.Fprintf(w, " (runs %s)", st.File)
	}
	if st.Connections >= 0 {
		fmt.Fprintf(w, "\n%s\n", text.Count(st.Connections, "open connection", "open connections"))
	} else {
		fmt.Fprintln(w, "\nopen connections unknown: the instances of tcpgrace run hold them")
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "listener\tnetwork\taddress")
	for _, l := range st.Listeners {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Name, l.Network, l.Address)
	}
	tw.Flush()
	if st.Supervisor != nil {
		printSupervisor(w, st.Supervisor)
		return
	}
	if t := st.Totals; t != nil {
		fmt.Fprintf(w, "since the first start (%s): %s (%d failed, %d refused); drains: %d finished, %d force-closed\n",
			t.FirstStart.Format(time.RFC3339), text.Count(t.Upgrades, "upgrade", "upgrades"), t.UpgradesFailed,
			t.Refusals, t.DrainsFinished, t.DrainsForceClosed)
	}
	if len(st.Counters) > 0 {
		names := slices.Sorted(maps.Keys(st.Counters))
		fields := make([]string, len(names))
		for i, n := range names {
			fields[i] = fmt.Sprintf("%s=%d", n, st.Counters[n])
		}
		fmt.Fprintf(w, "counters: %s\n", strings.Join(fields, " "))
	}
	printOlder(w, st.Older)
}

// printOlder prints the older generations still draining.
func printOlder(w io.Writer, older []control.Older) {
	if len(older) == 0 {
		fmt.Fprintln(w, "no older generation draining")
		return
	}
	for _, o := range older {
		if o.Error != "" {
			fmt.Fprintf(w, "draining: pid %d: connections unknown: %s\n", o.PID, o.Error)
			continue
		}
		fmt.Fprintf(w, "draining: pid %d, generation %d: %s left\n", o.PID, o.Generation,
			text.Count(o.Connections, "connection", "connections"))
	}
}

// printSupervisor prints what tcpgrace run adds: its instances, restarts
// and the last failure.
func printSupervisor(w io.Writer, sv *control.Supervisor) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "instance\tgeneration\tstate\tsince\tstatus")
	for _, in := range sv.Instances {
		pid := fmt.Sprint(in.PID)
		if in.MainPID != 0 {
			pid += fmt.Sprintf(" (main %d)", in.MainPID)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", pid, in.Generation, in.State, in.Since.Format(time.RFC3339), in.Status)
	}
	tw.Flush()
	fmt.Fprintf(w, "%s after a crash, %s in a row", text.Count(sv.Restarts, "restart", "restarts"),
		text.Count(sv.Crashes, "crash", "crashes"))
	if sv.RestartInMS > 0 {
		fmt.Fprintf(w, ", next restart in %d ms", sv.RestartInMS)
	}
	fmt.Fprintln(w)
	if sv.LastFailure != "" {
		fmt.Fprintf(w, "last failure: %s\n", sv.LastFailure)
	}
}
