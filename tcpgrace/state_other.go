//go:build !linux

package tcpgrace

import (
	"fmt"
	"os"
)

// memFile needs Linux's memfd: elsewhere state over 64 KiB cannot travel.
func memFile(name string, b []byte) (*os.File, error) {
	return nil, fmt.Errorf("%w: state over 64 KiB travels in a memfd (Linux only)", ErrNotSupported)
}
