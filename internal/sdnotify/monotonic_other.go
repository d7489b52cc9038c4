//go:build !linux

package sdnotify

// monotonicUsec is unknown off Linux: MONOTONIC_USEC= is left out (only
// systemd reads it, and systemd is Linux only).
func monotonicUsec() (uint64, bool) { return 0, false }
