package tcpgrace

import (
	"context"
	"syscall"
	"time"
)

// acceptQueueWait bounds how long a stop keeps accepting what waits in
// the kernel's accept queues before it closes the listeners: long enough
// for any queue a server keeps up with, short enough that a listener
// nobody accepts from cannot hold a stop up.
const acceptQueueWait = time.Second

// acceptQueued is the first step of Serve's drain: the accept goroutines
// take every connection that already waits in the kernel's accept queues
// (closing a listener would reset them, no other generation holds the
// socket any more) and the loop dispatches it, until each listener has
// been seen with an empty queue, for at most acceptQueueWait. Listeners
// closed by a hand-off have nothing queued here.
func (l *serveLoop) acceptQueued() {
	deadline := time.NewTimer(min(acceptQueueWait, l.s.drainTimeout()))
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond) // the queue has no "empty" event: look again
	defer tick.Stop()
	for _, ln := range l.listeners {
		for queued(ln) {
			select {
			case a := <-l.accepted:
				l.dispatch(a)
			case <-tick.C:
			case <-deadline.C:
				return
			}
		}
	}
}

// waitAcceptQueues is acceptQueued for a server with its own accept loop
// (Run): it waits until the Upgrader's stream listeners have each been
// seen with an empty accept queue, for at most acceptQueueWait or until
// ctx ends, while that server keeps accepting.
func (u *Upgrader) waitAcceptQueues(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, acceptQueueWait)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for _, ln := range u.streamSockets() {
		for queued(ln) {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}
}

// streamSockets returns the raw sockets of the registered listeners.
func (u *Upgrader) streamSockets() []syscall.Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []syscall.Conn
	for _, s := range u.sockets {
		if s.ln != nil {
			out = append(out, s.raw)
		}
	}
	return out
}

// waitUpgrade waits for a cancelled upgrade to report, dispatching what
// the accept goroutines (if any) take meanwhile, so that connections do
// not wait in the kernel's queue while the next generation is killed.
func waitUpgrade(upgraded <-chan error, accepted <-chan acceptResult, dispatch func(acceptResult)) error {
	for {
		select {
		case err := <-upgraded:
			return err
		case a := <-accepted:
			dispatch(a)
		}
	}
}
