package takeover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// ErrNotReady wraps every reason WaitReady gives for a taker that did
// not become ready.
var ErrNotReady = errors.New("tcpgrace: takeover: the taker did not become ready")

// WaitReady reads the taker's first word on r, the read end of the
// readiness pipe whose write end went to it: nil for wire.ReadyByte; an
// error wrapping ErrNotReady for wire.FailByte (with the taker's reason),
// for an end of file (it exited, or closed the pipe, without a word), and
// for no word within timeout or before ctx ends. It does not close r.
func WaitReady(ctx context.Context, r *os.File, timeout time.Duration) error {
	r.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	n, err := r.Read(b[:])
	switch {
	case n == 1 && b[0] == wire.ReadyByte:
		return nil
	case n == 1 && b[0] == wire.FailByte:
		text, _ := io.ReadAll(io.LimitReader(r, wire.MaxFailLen))
		return fmt.Errorf("%w: %s", ErrNotReady, strings.TrimPrefix(strings.ToValidUTF8(string(text), "?"), "tcpgrace: "))
	case n == 1:
		return fmt.Errorf("%w: unexpected byte %q on the readiness pipe", ErrNotReady, b[0])
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: it exited before it was ready", ErrNotReady)
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: no word within %v", ErrNotReady, timeout)
	}
	return fmt.Errorf("%w: reading its readiness pipe: %w", ErrNotReady, err)
}
