package sockfd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTemporaryAccept(t *testing.T) {
	wrapped := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{wrapped, true},
		{fmt.Errorf("x: %w", syscall.ECONNABORTED), true},
		{syscall.EINTR, true},
		{syscall.EBADF, false},
		{net.ErrClosed, false},
		{os.ErrDeadlineExceeded, false},
		{errors.New("other"), false},
		{nil, false},
	} {
		assert.Equal(t, c.want, TemporaryAccept(c.err), "%v", c.err)
	}
}
