package control

import "os"

// PIDNamespace is the pid namespace this process runs in, as
// /proc/self/ns/pid names it ("pid:[4026531836]"), or "" if that cannot
// be read. Pids in a reply mean something only in that namespace.
func PIDNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}
