package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// The control socket's commands: upgrade, reload, stop (status is in
// control.go).

// errRequesterGone refuses a request whose client closed its connection
// before the server read it (the server was stopped meanwhile, say): the
// client has given up and reported a failure, so carrying the request out
// later would surprise everyone.
var errRequesterGone = errors.New("tcpgrace: control: the requester is gone (it closed its connection before its request was read): not carried out")

// forwardTimeout bounds handing a stop on to the next generation.
const forwardTimeout = 2 * time.Second

// upgradeRefused says why an upgrade request cannot start now, if it
// cannot: the state refuses it, or this generation is still in its
// parent's ready grace (the upgrade to it is not over).
func (c *controlServer) upgradeRefused() error {
	if err := c.u.refused(opUpgrade); err != nil {
		return err
	}
	if parent, watched := c.u.inh.Watched(); watched {
		return fmt.Errorf("%w: the upgrade to this generation (pid %d) is in its ready grace, its parent (pid %d) still watches it; try again after the grace",
			ErrUpgradeInProgress, os.Getpid(), parent)
	}
	return nil
}

// upgrade carries out an upgrade request and describes its outcome: the
// Server loop runs it, as it runs one for a signal, or, without a loop,
// the request runs Upgrade itself (the program drives its Upgrader
// without a Server). An upgrade ends early when the request's timeout
// passes, or when this generation starts to leave. It is refused while
// this generation is still in its parent's ready grace (the upgrade to it
// is not over), and never started for a requester that is gone.
func (c *controlServer) upgrade(req control.Request, conn net.Conn) *control.Reply {
	if err := c.upgradeRefused(); err != nil {
		c.u.refuse("control request", err)
		return failReply(err)
	}
	if control.PeerGone(conn) {
		c.u.log.Warn("control: upgrade not started", "err", errRequesterGone)
		return control.FailReply(errRequesterGone)
	}
	ctx, cancel := req.Context(context.Background())
	defer cancel()
	begin := time.Now()
	taken, err := c.toLoop(request{cmd: control.CmdUpgrade, ctx: ctx})
	if !taken {
		err = c.u.Upgrade(requestedBy(ctx, "control request"))
	}
	if err != nil {
		return failReply(err)
	}
	c.mu.Lock()
	next := c.next
	c.mu.Unlock()
	return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{
		PID: next, Generation: c.u.Generation() + 1, OldPID: os.Getpid(),
		HandoffMS: float64(time.Since(begin).Microseconds()) / 1000, PIDNamespace: control.PIDNamespace(),
	}}
}

// failReply is the reply to a request that was not carried out: code
// refused where asking again later may succeed (another upgrade runs,
// not ready yet, too many generations draining, or this generation was
// replaced and the next one answers), failed otherwise.
func failReply(err error) *control.Reply {
	for _, retry := range []error{ErrUpgradeInProgress, ErrNotReady, ErrTooManyGenerations, ErrUpgraded} {
		if errors.Is(err, retry) {
			return control.RefuseReply(err)
		}
	}
	return control.FailReply(err)
}

// reload has the Server loop run its Reload hook, as on a reload signal,
// and replies once the hook has returned: with its error if it failed,
// an error if there is no hook or no Server loop. A run that is going on
// when the request arrives does not count: the reply waits for the next
// one (runs never overlap).
func (c *controlServer) reload(conn net.Conn) *control.Reply {
	if rep := c.precheck("reload", conn); rep != nil {
		return rep
	}
	taken, err := c.toLoop(request{cmd: control.CmdReload})
	switch {
	case !taken:
		return control.FailReply(errors.New("tcpgrace: control: reload: no Server (Serve, Run or RunHTTP) runs this generation, so there is no reload hook to run"))
	case err != nil:
		return failReply(err)
	}
	return &control.Reply{V: control.Version, OK: true, Reload: &control.Reloaded{
		PID: os.Getpid(), Generation: c.u.Generation(), PIDNamespace: control.PIDNamespace()}}
}

// precheck is what a reload or a stop checks first: a generation that
// handed over refuses it (ask the serving one), a requester that is gone
// gets nothing done. Then it waits (at most loopWait) for a Server loop
// that has not started yet, right after Ready. It returns the reply of a
// refusal, or nil.
func (c *controlServer) precheck(cmd string, conn net.Conn) *control.Reply {
	if c.replaced() {
		return failReply(fmt.Errorf("tcpgrace: control: %s: %w; ask the serving generation", cmd, ErrUpgraded))
	}
	if control.PeerGone(conn) {
		c.u.log.Warn("control: "+cmd+" not carried out", "err", errRequesterGone)
		return control.FailReply(errRequesterGone)
	}
	c.waitLoop(loopWait)
	return nil
}

// toLoop hands r to a Server loop and waits for its outcome; taken is
// false when no loop runs. A loop that ends before it takes r, or a
// control server that closes, refuses it with ErrClosed.
func (c *controlServer) toLoop(r request) (taken bool, err error) {
	c.mu.Lock()
	loops := c.loops
	c.mu.Unlock()
	if loops == 0 {
		return false, nil
	}
	reply := make(chan error, 1)
	r.reply = reply
	select {
	case c.reqs <- r:
		return true, <-reply
	case <-c.left:
	case <-c.done:
	}
	return true, fmt.Errorf("%w: this generation is leaving; no %s", ErrClosed, r.cmd)
}

// stop hands a stop request to the Server loop, which begins to drain as
// on a stop signal, and replies once the loop has ended. A generation
// that already leaves answers at once: it drains already, or, if it
// handed over, it says so (the request must go to the serving
// generation). A stop is never carried out for a requester that is gone.
//
// A stop stops the service, not only this process: one that arrives
// while a next generation is in this generation's ready grace ends the
// grace (the hand-off stands, as the next generation serves) and is handed
// on to the next generation, whose reply is the reply.
func (c *controlServer) stop(conn net.Conn) *control.Reply {
	if rep := c.precheck("stop", conn); rep != nil {
		return rep
	}
	if s := c.u.currentState(); s == leaving || s == closed {
		return c.stopping() // it drains already
	}
	if taken, _ := c.toLoop(request{cmd: control.CmdStop}); !taken {
		return control.FailReply(errors.New("tcpgrace: control: stop: no Server (Serve, Run or RunHTTP) runs this generation to drain it"))
	}
	if c.u.waitUpgrade(forwardTimeout); c.handedOver() {
		return c.forwardStop()
	}
	return c.stopping()
}

// handedOver reports whether an upgrade of this generation succeeded: a
// next generation took over (this one may be shut down since).
func (c *controlServer) handedOver() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next != 0
}

// loopWait bounds the wait of a stop for the Server loop of a generation
// that is ready but has not started it yet (a stop right after Ready).
const loopWait = time.Second

// waitLoop waits up to timeout for the first Server loop to start.
func (c *controlServer) waitLoop(timeout time.Duration) {
	select {
	case <-c.looping:
		return
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.looping:
	case <-t.C:
	case <-c.done:
	}
}

// waitUpgrade waits up to timeout for a running Upgrade to return (one
// cancelled by a stop returns at once: a next generation not yet ready is
// killed, a ready grace ends).
func (u *Upgrader) waitUpgrade(timeout time.Duration) {
	u.mu.Lock()
	done := u.upgradeDone
	u.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// forwardStop hands a stop on to the generation that took over while the
// stop arrived (in this generation's ready grace), on the control socket:
// once this generation's copy of it is closed, only the serving
// generation accepts there.
func (c *controlServer) forwardStop() *control.Reply {
	select {
	case <-c.srv.Done():
	case <-time.After(forwardTimeout):
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	rep, err := control.Do(ctx, c.path, control.Request{Cmd: control.CmdStop})
	switch {
	case err != nil:
	case !rep.OK:
		err = errors.New(rep.Error)
	case rep.Stop == nil:
		err = errors.New("a reply without the stop's result")
	}
	if err != nil {
		c.u.log.Error("control: stop: the next generation did not take the stop", "err", err)
		return control.FailReply(fmt.Errorf("tcpgrace: control: stop: this generation (pid %d) handed over during its ready grace and stops, but the stop did not reach the next generation, which may serve on: %w",
			os.Getpid(), err))
	}
	c.u.log.Info("control: stop handed on to the next generation", "next", rep.Stop.PID)
	return rep
}

// replaced reports whether a next generation took over.
func (c *controlServer) replaced() bool { return c.u.currentState() == handedOff }

func (c *controlServer) stopping() *control.Reply {
	return &control.Reply{V: control.Version, OK: true,
		Stop: &control.Stopping{PID: os.Getpid(), Connections: c.u.Stats().Active, PIDNamespace: control.PIDNamespace()}}
}

// status describes this generation and, if withOlder, asks each older
// generation still alive for its own on its status channel.
func (c *controlServer) status(withOlder bool) *control.Status {
	u := c.u
	file, _ := os.Executable()
	st := &control.Status{PID: os.Getpid(), Generation: u.Generation(), Executable: u.executable, File: file,
		Started: c.started, Listeners: []control.Listener{}, Older: []control.Older{}, PIDNamespace: control.PIDNamespace()}
	u.mu.Lock()
	st.State = u.state.statusName()
	for _, s := range u.liveSocketsLocked() {
		if !isControl(s.name) {
			st.Listeners = append(st.Listeners, control.Listener{Name: s.name, Network: s.network, Address: s.boundAddr()})
		}
	}
	st.Connections = u.conns.len()
	u.mu.Unlock()
	t := u.totalsNow()
	st.Totals = &control.Totals{FirstStart: t.FirstStart, Upgrades: t.Upgrades, UpgradesFailed: t.UpgradesFailed,
		Refusals: t.Refusals, HandoffMSSum: t.Handoffs.Sum * 1000, DrainsFinished: t.DrainsFinished,
		DrainsForceClosed: t.DrainsForceClosed}
	for _, c := range u.counters.read() {
		if st.Counters == nil {
			st.Counters = map[string]uint64{}
		}
		st.Counters[c.Name] = c.Value
	}
	if withOlder {
		for _, pid := range u.drainingOlder() {
			st.Older = append(st.Older, askOlder(c.path, pid))
		}
	}
	return st
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
