package handoff

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"
)

// frame is one received frame: its header, its payload and the fds that
// came with it (close-on-exec, owned by the receiver).
type frame struct {
	h       Header
	payload []byte
	fds     []int
}

// longAgo is a deadline in the past: it wakes a blocked read or write.
var longAgo = time.Unix(1, 0)

// watch sets the channel's deadline from ctx and wakes a blocked read or
// write when ctx is cancelled, until the returned function is called,
// which clears the deadline. One watch at a time per Conn.
func (c *Conn) watch(ctx context.Context) (done func()) {
	dl, _ := ctx.Deadline()
	_ = c.setDeadline(dl)
	var mu sync.Mutex
	finished := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			_ = c.setDeadline(longAgo)
		}
	})
	return func() {
		stop()
		mu.Lock()
		finished = true
		mu.Unlock()
		_ = c.setDeadline(time.Time{})
	}
}

// cause is what an I/O error err means under ctx: the context's error
// when the deadline it set or its cancellation woke the call. (The only
// deadlines on a Conn are ctx's, and the poller may see one pass a moment
// before ctx says so.)
func cause(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return context.DeadlineExceeded
}

// ended reports whether err is the end of a context.
func ended(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// closeFDs closes every fd of fds.
func closeFDs(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}
