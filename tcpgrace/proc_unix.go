//go:build unix && !linux

package tcpgrace

import "syscall"

// processAlive reports whether pid exists (a zombie counts as alive here).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
