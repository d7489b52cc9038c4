//go:build !unix

package takeover

import (
	"context"
	"errors"
	"net"
	"os"
)

// A takeover passes fds over Unix sockets (SCM_RIGHTS): elsewhere every
// step fails with errors.ErrUnsupported.

const oobSize = 0

func sendWithFile(context.Context, *net.UnixConn, []byte, *os.File) error {
	return errors.ErrUnsupported
}

func filesOf([]byte, *os.File) (*os.File, error) { return nil, errors.ErrUnsupported }

func own([]*os.File) ([]int, error) { return nil, errors.ErrUnsupported }

func closeFDs([]int) {}
