package main

import (
	"fmt"
	"io"
)

// runCmd is tcpgrace run, the supervisor: not there yet.
func runCmd(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tcpgrace run: not yet implemented")
	return exitUsage
}
