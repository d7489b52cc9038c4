package tcpgrace

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// memFile is a memfd (close-on-exec) that holds b, read from offset 0.
func memFile(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the memfd: %w", err)
	}
	return f, nil
}
