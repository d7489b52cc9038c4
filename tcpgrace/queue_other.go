//go:build !unix

package tcpgrace

// queued cannot tell here: the drain closes listeners without waiting
// for their accept queues.
func queued(any) bool { return false }
