package tcpgrace

import (
	"fmt"
	"os"
	"strings"
)

// processAlive reports whether pid runs: it exists and is not a zombie
// (exited, waiting to be reaped).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}
