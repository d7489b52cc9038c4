//go:build !unix

package bind

import (
	"io/fs"
	"net"
)

// Stat returns nil: there are no socket files here.
func Stat(path string) *File { return nil }

// Remove removes nothing and reports false.
func (f *File) Remove() bool { return false }

func listenUnix(path string, mode fs.FileMode) (*net.UnixListener, *File, error) {
	return nil, nil, ErrNotSupported
}
