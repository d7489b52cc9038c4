package tcpgrace

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/pidfile"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// child is a started next generation: an exec'd process, reaped by its
// own goroutine, or a taker (see runTaker), watched on its control
// connection.
type child struct {
	id     int           // its pid; a taker's as SO_PEERCRED saw it (0 in another pid namespace)
	exited chan struct{} // closed once reaped (a taker: its connection ended); err holds the result
	err    error

	end     func() // a process's kill
	stop    func() // a taker's kill: stop watching it, so that the reply tells it to give up
	onReady func() // a taker's confirmation, once its ReadyByte was read
}

func (c *child) pid() int { return c.id }

// ended says how kill ends the child, for an error's text.
func (c *child) ended() string {
	if c.stop != nil {
		return "the taker told to give up"
	}
	return "killed"
}

// kill ends the child: a process is killed, a taker is told to give up.
func (c *child) kill() {
	if c.stop != nil {
		c.stop()
		return
	}
	c.end()
}

// runChild starts the next generation and waits for it; see waitReady.
func (u *Upgrader) runChild(ctx context.Context, h *handed, env *wire.Env) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		h.close()
		return 0, fmt.Errorf("tcpgrace: readiness pipe: %w", err)
	}
	// The child honours the variable on this pipe only, so that it can
	// tell it was meant for it even after we died (see wire.Take).
	env.Pipe = fileInode(w)
	ready := &handed{closing: h.closing}
	ready.addFile(w)
	ready.fds = append(ready.fds, h.fds...)
	p, err := startProcess(u.executable, u.args, u.childEnv(env), ready)
	ready.close() // h's entries with the pipe's write end
	if err != nil {
		r.Close()
		return 0, fmt.Errorf("%w: cannot start %s: %w", ErrChildFailed, u.executable, err)
	}
	u.log.Info("upgrade: started next generation", "child", p.pid, "executable", u.executable, "file", p.file(u.executable))
	u.emit(event.Event{Kind: event.ChildStarted, Child: p.pid})
	c := &child{id: p.pid, end: p.kill, exited: make(chan struct{})}
	go func() {
		c.err = p.wait()
		close(c.exited)
	}()
	return c.pid(), u.waitReady(ctx, c, r)
}

// childEnv is the next generation's environment: ours minus our own
// variables, plus the encoded hand-off.
func (u *Upgrader) childEnv(env *wire.Env) []string {
	var vars []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case wire.EnvFDs, wire.EnvListenPID, wire.EnvListenFDs, wire.EnvListenFDNames:
			continue
		}
		vars = append(vars, kv)
	}
	vars = append(vars, u.sd.childEnv()...) // taken from our environment by New
	return append(vars, wire.EnvFDs+"="+env.Encode(os.Getpid()))
}

// readiness is what the child said on the pipe.
type readiness struct {
	ready  bool
	reason string // FailByte's text, or a description of garbage
	eof    bool   // closed without a word
}

func readReadiness(r io.Reader) readiness {
	var b [1]byte
	if n, _ := r.Read(b[:]); n == 0 {
		return readiness{eof: true}
	}
	switch b[0] {
	case wire.ReadyByte:
		return readiness{ready: true}
	case wire.FailByte:
		text, _ := io.ReadAll(io.LimitReader(r, wire.MaxFailLen))
		return readiness{reason: strings.ToValidUTF8(string(text), "?")}
	}
	return readiness{reason: fmt.Sprintf("unexpected byte %q on the readiness pipe", b[0])}
}

// readLeaving reads the child's word after ReadyByte: true for
// LeavingByte, false when its end closes without it (an exit, a crash, or
// a child that does not speak it).
func readLeaving(r io.Reader) bool {
	var b [1]byte
	n, _ := r.Read(b[:])
	return n == 1 && b[0] == wire.LeavingByte
}

// waitReady waits for the child's word on r, then watches it through
// Options.ReadyGrace (see readyWait). On failure it kills and reaps the
// child, and takes the PID file back if the child had written its own.
func (u *Upgrader) waitReady(ctx context.Context, c *child, r *os.File) error {
	w := newReadyWait(u, ctx, c)
	var spoke atomic.Bool // the pipe became readable: a word, or its end, is there to read
	// The pipe first, then spoke: a word the pipe no longer holds was
	// read after spoke was set. (The other order misses a word read
	// between the two.)
	w.unread = func() bool { return pipeUnread(r) || spoke.Load() }
	read := make(chan struct{})
	go func() {
		defer close(read)
		if awaitReadable(r) {
			spoke.Store(true) // before the read takes the word out of the pipe
		}
		m := readReadiness(r)
		w.words <- m
		if m.ready {
			w.leaving <- readLeaving(r)
		}
	}()
	defer func() {
		r.Close() // unblocks the reader if a grandchild still holds the write end
		<-read
	}()
	err := w.run()
	if err != nil {
		c.kill()
		<-c.exited
		u.reclaimPIDFile(c.pid())
	}
	return err
}

// readyWait is the wait for one child, a state machine whose steps are
// channels: a step not yet reached, or done, is a nil channel, so the one
// select in run sees only what can still happen.
//
// Before the child's word, msgs and timeout are live. Its word "ready"
// moves on to the grace: msgs and timeout become nil, left and grace go
// live. Before ready, a failure reason, the ready timeout, ctx's end and
// the child's exit end the wait with an error. In the grace, its end,
// ctx's end and the child's LeavingByte end the wait with success, and
// exitedAfterReady judges an exit.
type readyWait struct {
	u   *Upgrader
	ctx context.Context
	c   *child

	words   chan readiness // the reader's first result
	leaving chan bool      // the reader's result after ReadyByte
	unread  func() bool    // whether the reader has a word, or the end, to deliver (nil: never)

	msgs    <-chan readiness // words, until read
	left    <-chan bool      // leaving, in the grace only
	timeout <-chan time.Time // the ready timeout, until ready
	grace   <-chan time.Time // the grace, once ready
	ready   bool
}

func newReadyWait(u *Upgrader, ctx context.Context, c *child) *readyWait {
	w := &readyWait{u: u, ctx: ctx, c: c, words: make(chan readiness, 1), leaving: make(chan bool, 1)}
	w.msgs = w.words
	w.timeout = time.After(u.opts.readyTimeout())
	return w
}

// run is the wait: each step reports whether the wait is over, and with
// what error.
func (w *readyWait) run() error {
	for {
		var done bool
		var err error
		select {
		case m := <-w.msgs:
			done, err = w.word(m)
		case l := <-w.left:
			done = w.leftWord(l)
		case <-w.c.exited:
			done, err = true, w.exited()
		case <-w.timeout:
			done, err = w.timedOut()
		case <-w.grace:
			done = true
		case <-w.ctx.Done():
			if m, ok := w.wordWritten(); ok { // the child spoke before the end: its word counts
				done, err = w.word(m)
				break // the next round sees the end again, with the word acted on
			}
			done = true
			if !w.ready { // once ready, the child serves: killing it would reset what it accepted
				err = fmt.Errorf("tcpgrace: upgrade cancelled, next generation %s: %w", w.c.ended(), w.ctx.Err())
			}
		}
		if done {
			return err
		}
	}
}

// wordWritten returns the child's first word if it is already written,
// read or not: a child that said ready before ctx ended serves, and a
// cancel must not kill it (it may have accepted connections). It waits
// only for a word the pipe already holds, or the reader already took.
func (w *readyWait) wordWritten() (readiness, bool) {
	if w.msgs == nil {
		return readiness{}, false
	}
	select {
	case m := <-w.msgs:
		return m, true
	default:
	}
	if w.unread == nil || !w.unread() {
		return readiness{}, false
	}
	return <-w.msgs, true // the reader has bytes to read: its result comes at once
}

// word acts on the child's first word.
func (w *readyWait) word(m readiness) (done bool, err error) {
	w.msgs = nil
	switch {
	case m.ready:
		if w.c.onReady != nil {
			w.c.onReady()
		}
		w.u.childReady(w.c.pid())
		return w.startGrace(), nil
	case m.eof:
		return false, nil // on its way out: its exit status tells why
	}
	return true, fmt.Errorf("%w: %s", ErrChildFailed, strings.TrimPrefix(m.reason, "tcpgrace: "))
}

// startGrace moves on to Options.ReadyGrace, and reports true if there is
// none: the hand-off stands at once.
func (w *readyWait) startGrace() bool {
	w.ready, w.timeout = true, nil
	grace := w.u.opts.ReadyGrace
	if grace <= 0 {
		return true
	}
	w.left, w.grace = w.leaving, time.After(grace)
	return false
}

// leftWord acts on the child's word after ready: LeavingByte ends the
// grace, a close without it leaves the child's exit to tell.
func (w *readyWait) leftWord(leaving bool) bool {
	w.left = nil
	if leaving {
		w.u.log.Info("next generation leaves on purpose: hand-off stands", "child", w.c.pid())
	}
	return leaving
}

// exited judges the child's exit. Before ready its last word may still be
// in the pipe; its write end is closed now, so the reader finishes
// without waiting for long.
func (w *readyWait) exited() error {
	if w.ready {
		return w.exitedAfterReady(w.left, w.grace)
	}
	m := readiness{eof: true}
	if w.msgs != nil {
		select {
		case m = <-w.msgs:
		case <-w.timeout:
		case <-w.ctx.Done():
		}
	}
	switch {
	case m.ready:
		return w.exitedAfterReady(w.leaving, w.timeout) // as if seen during the grace
	case !m.eof:
		return fmt.Errorf("%w: %s (%v)", ErrChildFailed, strings.TrimPrefix(m.reason, "tcpgrace: "), w.c.err)
	}
	return fmt.Errorf("%w: it exited before it was ready: %v", ErrChildFailed, w.c.err)
}

// timedOut ends the wait at the ready timeout, unless the word came at
// the very last moment.
func (w *readyWait) timedOut() (done bool, err error) {
	select {
	case m := <-w.msgs:
		if done, err = w.word(m); done || w.ready {
			return done, err
		}
	default:
	}
	return true, fmt.Errorf("%w: no word within %v, %s", ErrReadyTimeout, w.u.opts.readyTimeout(), w.c.ended())
}

// exitedAfterReady decides about a child that said ready and has exited.
// If it said it was leaving, or exited with status 0, it left on purpose
// and the hand-off stands. Otherwise it crashed while it was the serving
// generation, and the upgrade fails. Its word, if any, is in the pipe
// before its exit, so left answers at once unless it said nothing and
// another process still holds the pipe's write end; then the wait ends at
// deadline or ctx's end, as a crash.
func (w *readyWait) exitedAfterReady(left <-chan bool, deadline <-chan time.Time) error {
	leaving := false
	if left != nil {
		select {
		case leaving = <-left:
		case <-deadline:
		case <-w.ctx.Done():
		}
	}
	switch {
	case leaving:
		w.u.log.Info("next generation left on purpose after it said ready: hand-off stands",
			"child", w.c.pid(), "status", exitStatus(w.c.err))
		return nil
	case w.c.err == nil:
		w.u.log.Info("next generation exited 0 after it said ready: hand-off stands", "child", w.c.pid())
		return nil
	}
	return fmt.Errorf("%w: it exited after it said ready: %v", ErrChildFailed, w.c.err)
}

// exitStatus describes the result of cmd.Wait for a log line.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// reclaimPIDFile puts this process's pid back into the PID file if a
// child that failed had written its own there.
func (u *Upgrader) reclaimPIDFile(child int) {
	if u.opts.PIDFile == "" || pidfile.Read(u.opts.PIDFile) != child {
		return
	}
	h, err := pidfile.WriteHeld(u.opts.PIDFile, os.Getpid())
	if err != nil {
		u.log.Error("taking the pid file back from the failed next generation", "err", err)
	}
	u.holdPIDFile(h)
}
