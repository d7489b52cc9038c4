package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// versionCmd is tcpgrace version: the build, from the stamp
// (-ldflags "-X main.version=...") and the build information the Go
// toolchain records: the module's version, the VCS revision, its time
// and whether the tree was modified, and the Go version. It needs no
// control socket.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcpgrace version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: tcpgrace version\n\nPrints this build: its version stamp, module version, VCS revision, its time\nand whether the tree was modified, and the Go version. No flags.\n\nExit status: 0, or 2 on a usage error.\n")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tcpgrace version: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	info, _ := debug.ReadBuildInfo() // nil if the binary has none
	printVersion(stdout, info)
	return exitOK
}

// printVersion writes one "key: value" line per fact of this build, from
// info (nil: none); a fact info lacks (no VCS at build time, say) is left
// out.
func printVersion(w io.Writer, info *debug.BuildInfo) {
	fmt.Fprintf(w, "tcpgrace %s\n", version)
	if info == nil {
		fmt.Fprintf(w, "go: %s\n", runtime.Version())
		return
	}
	fmt.Fprintf(w, "module: %s %s\n", info.Main.Path, info.Main.Version)
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		fmt.Fprintf(w, "revision: %s\n", rev)
	}
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(w, "time: %s\n", t)
	}
	fmt.Fprintf(w, "go: %s\n", info.GoVersion)
}
