package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/inherit"
)

// Upgrade starts the next generation from [Options.Executable] with the
// same arguments, hands it every registered socket, and blocks until it
// calls Ready, fails, or ctx ends.
//
// On success this generation's listeners are closed (the kernel sockets
// stay open in the next generation, so no queued connection is lost and
// none is refused), [Upgrader.Exit] is closed, and the caller should drain
// and exit; connections already accepted are the caller's to finish. Its
// packet conns stop reading but stay open, so that replies to datagrams
// already read can still be written, until Shutdown or Close closes them
// (see [Upgrader.ListenPacket]).
//
// On failure nothing changes: this generation keeps every socket and keeps
// serving, the child has been killed and reaped, no fd is left behind, and
// a later Upgrade may try again. The error wraps [ErrChildStart],
// [ErrChildExited], [ErrChildFailed] (with the child's reason),
// [ErrReadyTimeout] or ctx's error. A second Upgrade while one runs fails
// at once with [ErrUpgradeInProgress]; before Ready with [ErrNotReady];
// after a successful one with [ErrUpgraded]; after Shutdown with
// [ErrClosed]; with [ErrTooManyGenerations] if older generations still
// draining would make more than [Options.MaxGenerations] alive; and with
// [ErrPID1] in a container's entrypoint, where the old generation's exit
// would end the namespace, new generation included: nothing changes.
//
// Shutdown and Close cancel a running Upgrade, as ctx's end does, until the
// child says ready; within [Options.ReadyGrace] after that, both end the
// grace early and the hand-off stands (the child serves, and killing it
// would reset what it accepted).
func (u *Upgrader) Upgrade(ctx context.Context) error {
	if os.Getpid() == 1 {
		err := fmt.Errorf("%w: run it under an init that stays (docker run --init, tini) or a supervisor", ErrPID1)
		u.log.Error("upgrade failed", "err", err)
		return err
	}
	ctx, files, env, err := u.beginUpgrade(ctx)
	if err != nil {
		u.log.Error("upgrade failed", "err", err)
		return err
	}
	sdDone := u.sdUpgrading()
	pid, err := u.runChild(ctx, files, env)
	sdDone()
	u.sdUpgraded(pid, err)
	u.controlUpgraded(pid, err)
	u.endUpgrade(err == nil)
	if err != nil {
		u.log.Error("upgrade failed", "err", err)
		return err
	}
	u.log.Info("upgrade done: next generation serves", "child", pid)
	return nil
}

// beginUpgrade moves serving -> upgrading and duplicates every socket.
func (u *Upgrader) beginUpgrade(ctx context.Context) (context.Context, []*os.File, *inherit.Env, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("tcpgrace: upgrade: %w", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.stateErrLocked(); err != nil {
		return nil, nil, nil, err
	}
	if !u.ready {
		return nil, nil, nil, ErrNotReady
	}
	older := u.drainingOlder()
	if n, max := len(older)+2, u.opts.maxGenerations(); n > max {
		return nil, nil, nil, fmt.Errorf("%w: %d with the next one, limit %d (older generations still draining: %v)",
			ErrTooManyGenerations, n, max, older)
	}
	env := &inherit.Env{Generation: u.Generation() + 1, ReadyFD: inherit.ListenFDsStart, Older: older}
	var files []*os.File
	for _, s := range u.liveSocketsLocked() {
		f, err := dupSocket(s.raw, s.name)
		if err != nil {
			closeFiles(files)
			return nil, nil, nil, err
		}
		files = append(files, f)
		env.Entries = append(env.Entries, inherit.Entry{
			Name: s.name, FD: inherit.ListenFDsStart + len(files), Network: s.network, Address: s.address,
		})
		if s.foreign {
			env.Keep = append(env.Keep, s.name)
		}
		if s.unix != nil {
			// The file as it was bound, not as it is now: the next
			// generation's owner check follows the socket.
			env.Owned = append(env.Owned, inherit.UnixFile{Name: s.name, Dev: s.unix.dev, Ino: s.unix.ino})
		}
	}
	u.state = stateUpgrading
	ctx, cancel := context.WithCancel(ctx)
	u.cancelUpgrade, u.upgradeDone = cancel, make(chan struct{})
	return ctx, files, env, nil
}

// drainingOlder lists the older generations that are still alive.
func (u *Upgrader) drainingOlder() []int {
	var alive []int
	for _, pid := range u.inh.Older() {
		if processAlive(pid) {
			alive = append(alive, pid)
		}
	}
	return alive
}

// endUpgrade leaves the upgrading state: to upgraded on success (closing
// this generation's copies of the listeners, stopping reads on its packet
// conns), back to serving on failure.
func (u *Upgrader) endUpgrade(ok bool) {
	u.mu.Lock()
	u.cancelUpgrade()
	close(u.upgradeDone)
	u.cancelUpgrade, u.upgradeDone = nil, nil
	var sockets []*socket
	if ok {
		u.handedOff = true
		sockets = u.liveSocketsLocked()
	}
	if u.state == stateUpgrading && ok {
		u.state = stateUpgraded
	} else if u.state == stateUpgrading {
		u.state = stateServing
	}
	u.mu.Unlock()
	if !ok {
		return
	}
	u.leave() // said when the child said ready; a no-op by now, unless it exited first
	stream, packets := splitSockets(sockets)
	for _, s := range stream {
		s.closeRaw()
	}
	u.closeExit()
	stopReading(packets) // after Exit: a read that fails finds Exit closed
}

// leave tells this generation's parent, if it still watches (its
// ReadyGrace), that this generation leaves on purpose: it handed over, or
// it began to stop. Its exit is then no crash to roll back from, whatever
// its status. Only the first call says anything; a parent that no longer
// reads is no error.
func (u *Upgrader) leave() {
	if err := u.inh.Leave(); err != nil && !errors.Is(err, syscall.EPIPE) {
		u.log.Warn("telling the parent generation we leave", "err", err)
	}
}

// child is a started next generation, reaped by its own goroutine.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once reaped; err holds the result
	err    error
}

func (u *Upgrader) runChild(ctx context.Context, files []*os.File, env *inherit.Env) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		closeFiles(files)
		return 0, fmt.Errorf("tcpgrace: readiness pipe: %w", err)
	}
	// The child honours the variable on this pipe only, so that it can
	// tell it was meant for it even after we died (see inherit.Take).
	env.Pipe = fileInode(w)
	cmd := u.command(append([]*os.File{w}, files...), env)
	file := resolved(u.executable) // what runs: symlinks followed now, as exec follows them
	err = cmd.Start()
	w.Close()
	closeFiles(files)
	if err != nil {
		r.Close()
		return 0, fmt.Errorf("%w: %s: %w", ErrChildStart, u.executable, err)
	}
	u.log.Info("upgrade: started next generation", "child", cmd.Process.Pid, "executable", u.executable, "file", file)
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return cmd.Process.Pid, u.waitReady(ctx, c, r)
}

// command builds the next generation's process: our stdio (real files, so
// the child outlives us), our environment minus our own variables plus the
// encoded hand-off.
func (u *Upgrader) command(extra []*os.File, env *inherit.Env) *exec.Cmd {
	var vars []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case inherit.EnvFDs, inherit.EnvListenPID, inherit.EnvListenFDs, inherit.EnvListenFDNames:
			continue
		}
		vars = append(vars, kv)
	}
	vars = append(vars, u.sd.childEnv()...) // taken from our environment by New
	vars = append(vars, inherit.EnvFDs+"="+env.Encode(os.Getpid()))
	return &exec.Cmd{
		Path:       u.executable,
		Args:       u.args,
		Env:        vars,
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: extra,
	}
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
	case inherit.ReadyByte:
		return readiness{ready: true}
	case inherit.FailByte:
		text, _ := io.ReadAll(io.LimitReader(r, inherit.MaxFailLen))
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
	return n == 1 && b[0] == inherit.LeavingByte
}

// waitReady waits for the child's word, its exit, the ready timeout or
// ctx. On any failure it kills and reaps the child before returning.
func (u *Upgrader) waitReady(ctx context.Context, c *child, r *os.File) error {
	msgs, left, read := make(chan readiness, 1), make(chan bool, 1), make(chan struct{})
	go func() {
		defer close(read)
		m := readReadiness(r)
		msgs <- m
		if m.ready {
			left <- readLeaving(r)
		}
	}()
	defer func() {
		r.Close() // unblocks the reader if a grandchild still holds the write end
		<-read
	}()
	timer := time.NewTimer(u.opts.readyTimeout())
	defer timer.Stop()
	var err error
	for err == nil {
		select {
		case m := <-msgs:
			msgs = nil
			switch {
			case m.ready:
				// The child serves: as far as our own parent is
				// concerned, we are leaving.
				u.leave()
				return u.confirm(ctx, c, left)
			case !m.eof:
				err = fmt.Errorf("%w: %s", ErrChildFailed, m.reason)
			}
			// EOF: the child is on its way out; wait for its status.
		case <-c.exited:
			// Its last word may still be in the pipe: the write end is
			// closed now, so the reader finishes without waiting.
			m := readiness{eof: true}
			if msgs != nil {
				select {
				case m = <-msgs:
					msgs = nil
				case <-timer.C:
				case <-ctx.Done():
				}
			}
			if m.ready {
				return u.exitedAfterReady(ctx, c, left, timer.C) // as if seen during the grace
			}
			err = exitError(m, c.err)
		case <-timer.C:
			if m, ok := poll(msgs); ok {
				msgs = nil
				if m.ready {
					u.leave()
					return u.confirm(ctx, c, left) // ready at the last moment: take it
				}
			}
			err = fmt.Errorf("%w: no word within %v, killed", ErrReadyTimeout, u.opts.readyTimeout())
		case <-ctx.Done():
			err = fmt.Errorf("tcpgrace: upgrade cancelled, next generation killed: %w", ctx.Err())
		}
	}
	c.cmd.Process.Kill()
	<-c.exited
	u.reclaimPIDFile(c.cmd.Process.Pid)
	return err
}

// poll takes a message from msgs if one is there, without waiting.
func poll(msgs <-chan readiness) (readiness, bool) {
	select {
	case m := <-msgs:
		return m, true
	default:
		return readiness{}, false
	}
}

// confirm watches a child that said ready for Options.ReadyGrace. If it
// crashes meanwhile while it serves, the upgrade fails and this
// generation, which never stopped accepting, keeps serving and takes the
// PID file back. A child that says it leaves (LeavingByte: it handed over
// to a generation of its own, or began to stop) is no longer watched:
// the hand-off stands, whatever its exit status later. ctx's end (the
// caller's, or Shutdown's) ends the grace early, and the hand-off stands
// too: the child serves, and killing it would reset what it accepted.
func (u *Upgrader) confirm(ctx context.Context, c *child, left <-chan bool) error {
	grace := u.opts.ReadyGrace
	if grace <= 0 {
		return nil
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		case leaving := <-left:
			if leaving {
				u.log.Info("next generation leaves on purpose: hand-off stands", "child", c.cmd.Process.Pid)
				return nil
			}
			left = nil // closed without a word: its exit tells
		case <-c.exited:
			return u.exitedAfterReady(ctx, c, left, timer.C)
		}
	}
}

// exitedAfterReady decides about a child that said ready and has exited.
// If it said it was leaving, or exited with status 0, it left on purpose
// and the hand-off stands; otherwise it crashed while it was the serving
// generation, the upgrade fails and the PID file is ours again. Its word,
// if any, is in the pipe before its exit, so left answers at once unless
// it said nothing and another process still holds the pipe's write end;
// then the wait ends at deadline or ctx's end, as a crash.
func (u *Upgrader) exitedAfterReady(ctx context.Context, c *child, left <-chan bool, deadline <-chan time.Time) error {
	leaving := false
	if left != nil {
		select {
		case leaving = <-left:
		case <-deadline:
		case <-ctx.Done():
		}
	}
	switch {
	case leaving:
		u.log.Info("next generation left on purpose after it said ready: hand-off stands", "child", c.cmd.Process.Pid, "status", exitStatus(c.err))
		return nil
	case c.err == nil:
		u.log.Info("next generation exited 0 after it said ready: hand-off stands", "child", c.cmd.Process.Pid)
		return nil
	}
	u.reclaimPIDFile(c.cmd.Process.Pid)
	return fmt.Errorf("%w: it exited after it said ready: %v", ErrChildExited, c.err)
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
	if u.opts.PIDFile == "" || readPIDFile(u.opts.PIDFile) != child {
		return
	}
	if err := writePIDFile(u.opts.PIDFile, os.Getpid()); err != nil {
		u.log.Error("taking the pid file back from the failed next generation", "err", err)
	}
}

// exitError explains a child that exited before the parent took its
// readiness: with the reason it sent, if any, and its exit status.
func exitError(m readiness, status error) error {
	switch {
	case !m.eof:
		return fmt.Errorf("%w: %s (%v)", ErrChildFailed, m.reason, status)
	}
	return fmt.Errorf("%w: %v", ErrChildExited, status)
}

// resolved is path with every symlink followed, or path itself if that
// fails (exec then reports why).
func resolved(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
