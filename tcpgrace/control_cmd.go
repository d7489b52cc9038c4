package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// The control socket's commands: upgrade, stop, status.

// upgrade runs Upgrade for a request and describes its outcome. An
// upgrade ends early when the request's timeout passes, or when this
// generation starts to leave.
func (c *controlServer) upgrade(req control.Request) *control.Reply {
	c.mu.Lock()
	leaving := c.leaving
	c.mu.Unlock()
	if leaving {
		return control.FailReply(fmt.Errorf("%w: this generation is leaving; no upgrade", ErrClosed))
	}
	ctx := c.leaveCtx
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	begin := time.Now()
	if err := c.u.Upgrade(ctx); err != nil {
		return control.FailReply(err)
	}
	c.mu.Lock()
	next := c.next
	c.mu.Unlock()
	return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{
		PID: next, Generation: c.u.Generation() + 1, OldPID: os.Getpid(),
		HandoffMS: float64(time.Since(begin).Microseconds()) / 1000,
	}}
}

// stop hands a stop request to the Server loop, which begins to drain as
// on a stop signal, and replies once the loop took it. A generation that
// already leaves answers at once: it drains already, or, if it handed
// over, it says so (the request must go to the serving generation).
func (c *controlServer) stop() *control.Reply {
	if c.replaced() {
		return control.FailReply(fmt.Errorf("tcpgrace: control: stop: %w; ask the serving generation", ErrUpgraded))
	}
	c.mu.Lock()
	loops, leaving := c.loops, c.leaving
	c.mu.Unlock()
	switch {
	case leaving:
		return c.stopping() // it drains already
	case loops == 0:
		return control.FailReply(errors.New("tcpgrace: control: stop: no Server (Serve, Run or RunHTTP) runs this generation to drain it"))
	}
	select {
	case c.stopReq <- struct{}{}:
	case <-c.leaveCtx.Done(): // the loop ended meanwhile
		if c.replaced() {
			return control.FailReply(fmt.Errorf("tcpgrace: control: stop: %w; ask the serving generation", ErrUpgraded))
		}
	case <-c.done:
	}
	return c.stopping()
}

// replaced reports whether a next generation took over.
func (c *controlServer) replaced() bool {
	c.u.mu.Lock()
	defer c.u.mu.Unlock()
	return c.u.state == handedOff
}

func (c *controlServer) stopping() *control.Reply {
	return &control.Reply{V: control.Version, OK: true,
		Stop: &control.Stopping{PID: os.Getpid(), Connections: c.u.Stats().Active}}
}

// status describes this generation and, if withOlder, asks each older
// generation still alive for its own on its status channel.
func (c *controlServer) status(withOlder bool) *control.Status {
	u := c.u
	file, _ := os.Executable()
	st := &control.Status{PID: os.Getpid(), Generation: u.Generation(), Executable: u.executable, File: file,
		Started: c.started, Listeners: []control.Listener{}, Older: []control.Older{}}
	u.mu.Lock()
	st.State = stateName(u.state)
	for _, s := range u.liveSocketsLocked() {
		st.Listeners = append(st.Listeners, control.Listener{Name: s.name, Network: s.network, Address: s.boundAddr()})
	}
	st.Connections = len(u.conns)
	u.mu.Unlock()
	c.mu.Lock()
	if c.leaving && st.State == "serving" {
		st.State = "stopping"
	}
	c.mu.Unlock()
	if withOlder {
		for _, pid := range u.drainingOlder() {
			st.Older = append(st.Older, askOlder(c.path, pid))
		}
	}
	return st
}

// stateName is the state in a status reply, from stateErrLocked.
func stateName(s state) string {
	switch s {
	case starting, readying:
		return "starting"
	case serving, upgrading:
		return s.String()
	case handedOff:
		return "draining"
	}
	return "stopping"
}

// boundAddr is the address the socket is bound to.
func (s *socket) boundAddr() string {
	if s.pc != nil {
		return s.pc.LocalAddr().String()
	}
	return s.ln.Addr().String()
}

// askOlder asks the draining generation pid for its status on its status
// channel.
func askOlder(path string, pid int) control.Older {
	o := control.Older{PID: pid, Connections: -1}
	st, err := statusOf(path, pid, olderStatusTimeout)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Generation, o.Connections = st.Generation, st.Connections
	return o
}
