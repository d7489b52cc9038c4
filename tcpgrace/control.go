package tcpgrace

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/event"
)

// controlName is the registry name of the control socket, its path
// appended: a next generation configured with another path asks for
// another name, and the old socket, unclaimed, is closed at its Ready.
const controlName = "tcpgrace-control:"

// isControl reports whether name is a control socket's registry name:
// it is the library's own, not among the program's listeners (the log's
// "listening" lines, status).
func isControl(name string) bool { return strings.HasPrefix(name, controlName) }

// controlMode is the permission of the control socket's file, whatever
// Options.UnixMode says: its owner's only (root and its uid are let in by
// their credentials anyway; the mode keeps the others from connecting).
const controlMode = 0o600

// olderStatusTimeout bounds the question to one draining generation.
const olderStatusTimeout = 500 * time.Millisecond

// controlServer answers the control socket ([Options.Control]) of one
// generation, and its status channel: a socket of its own on which it
// answers status while it drains (see statusChannelName). Each is a
// control.Server (accept, peer check, bounds, framing) with a handler of
// its own (answer, answerStatusChannel). Both are served from Ready on,
// the control socket until this generation hands over or stops, the
// status channel until Shutdown has drained. Upgrade and stop requests go
// to the Server loop (reqs), which carries them out as it does signals;
// the state they find is the Upgrader's.
type controlServer struct {
	u           *Upgrader
	path        string
	ln          net.Listener // the registry's socket, accepted from without tracking
	started     time.Time
	readTimeout time.Duration // the servers' read timeout (control.ReadTimeout)

	reqs     chan request  // a Server loop takes requests from it
	left     chan struct{} // closed when a Server loop ends: no loop takes requests any more
	leftOnce sync.Once
	done     chan struct{} // closed by controlDone
	looping  chan struct{} // closed when the first Server loop starts
	firstRun sync.Once

	mu      sync.Mutex
	serving bool            // the servers run
	closed  bool            // controlDone was called: no more connections
	loops   int             // Server loops that take requests
	next    int             // the pid the successful upgrade started
	srv     *control.Server // the control socket's; nil before Ready
	side    *control.Server // the status channel's; nil without one
	sideLn  net.Listener    // the status channel, which controlDone closes
}

// request is an upgrade, a reload or a stop asked on the control socket,
// for a Server loop to carry out.
type request struct {
	cmd   string          // control.CmdUpgrade, CmdStop or CmdReload
	ctx   context.Context // an upgrade's: ends at the request's timeout
	reply chan<- error    // the outcome, exactly once; buffered
}

// listenControl registers the control socket, if one is configured: the
// one inherited under its name, or a new one (a stale file replaced, a
// live one an error, with Options.UnixMode). New calls it.
func (u *Upgrader) listenControl() error {
	path := u.opts.Control
	if path == "" {
		return nil
	}
	if err := controlSupported(); err != nil {
		return fmt.Errorf("tcpgrace: control socket %s: %w", path, err)
	}
	ln, err := u.Listen(controlName+path, "unix", path)
	if err != nil {
		return fmt.Errorf("tcpgrace: control socket: %w", err)
	}
	u.tightenControlMode(controlName + path)
	u.ctl = &controlServer{u: u, path: path, ln: ln.(*listener).Listener, started: time.Now(),
		readTimeout: control.ReadTimeout, reqs: make(chan request), left: make(chan struct{}),
		done: make(chan struct{}), looping: make(chan struct{})}
	return nil
}

// serveControl starts answering the control socket and the status
// channel; Ready calls it once this generation serves.
func (u *Upgrader) serveControl() {
	c := u.ctl
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.serving || c.closed {
		return
	}
	c.serving = true
	side, err := listenStatusChannel(c.path, os.Getpid())
	if err != nil {
		u.log.Warn("control: no status channel: status of this generation while it drains is unknown", "err", err)
	} else {
		c.sideLn, c.side = side, c.newServer(side, c.answerStatusChannel)
		c.side.Start()
	}
	c.srv = c.newServer(c.ln, c.answer)
	c.srv.Start()
	u.log.Info("control socket: answering", "path", c.path)
}

// newServer is a control server of ln that answers with h.
func (c *controlServer) newServer(ln net.Listener, h control.Handler) *control.Server {
	return control.NewServer(ln, control.ServerOptions{Handler: h, Name: "tcpgrace: control", LogPrefix: "control",
		Logger: c.u.log, ReadTimeout: c.readTimeout})
}

// on is the control server's subscriber to the event stream: it starts
// answering once this generation serves, and keeps the pid a successful
// upgrade started for the reply.
func (c *controlServer) on(e event.Event) {
	switch {
	case e.Kind == event.Ready:
		c.u.serveControl()
	case e.Kind == event.UpgradeEnded && e.Err == nil:
		c.mu.Lock()
		c.next = e.Child
		c.mu.Unlock()
	}
}

// startLoop is called by a Server loop as it starts: it returns the
// channel on which control requests arrive (nil without a control socket)
// and the function to call as the loop ends, which moves this generation
// to leaving (see loopEnded).
func (u *Upgrader) startLoop() (<-chan request, func()) {
	c := u.ctl
	if c == nil {
		return nil, u.loopEnded
	}
	c.mu.Lock()
	c.loops++
	c.mu.Unlock()
	c.firstRun.Do(func() { close(c.looping) })
	return c.reqs, func() {
		c.mu.Lock()
		c.loops--
		c.mu.Unlock()
		c.leftOnce.Do(func() { close(c.left) })
		u.loopEnded()
	}
}

// loopEnded moves serving to leaving as a Server loop ends: an upgrade
// others started (Upgrade called directly, or from the control socket
// without a loop) is cancelled first, and no upgrade starts afterwards.
// A generation that handed over stays handed off.
func (u *Upgrader) loopEnded() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cancelUpgradeLocked()
	u.moveLocked(leaving)
}

// controlDone ends the control server: Shutdown and Close call it after
// their wait. Requests being answered finish until ctx ends; then their
// connections are closed. The status channel closes.
func (u *Upgrader) controlDone(ctx context.Context) {
	c := u.ctl
	if c == nil {
		return
	}
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	servers, sideLn := []*control.Server{c.srv, c.side}, c.sideLn
	c.mu.Unlock()
	if first {
		close(c.done)
		if sideLn != nil { // the control socket itself is closed with the registry
			sideLn.Close()
		}
	}
	for _, srv := range servers {
		if srv != nil {
			srv.Close(ctx)
		}
	}
	for _, srv := range servers {
		if srv != nil {
			srv.Wait()
		}
	}
}

// answer carries out a request on the control socket.
func (c *controlServer) answer(req control.Request, peer control.Peer, conn net.Conn) *control.Reply {
	if req.Cmd == control.CmdStatus { // a monitor may poll it
		c.u.log.Debug("control request", "cmd", req.Cmd, "peer_pid", peer.PID, "peer_uid", peer.UID)
	} else {
		c.u.log.Info("control request", "cmd", req.Cmd, "peer_pid", peer.PID, "peer_uid", peer.UID)
	}
	switch req.Cmd {
	case control.CmdUpgrade:
		return c.upgrade(req, conn)
	case control.CmdStop:
		return c.stop(conn)
	case control.CmdReload:
		return c.reload(conn)
	case control.CmdTakeover:
		return c.takeover(req, peer, conn)
	}
	return &control.Reply{V: control.Version, OK: true, Status: c.status(true)}
}

// answerStatusChannel answers on the status channel: status only, of
// this generation alone.
func (c *controlServer) answerStatusChannel(req control.Request, _ control.Peer, _ net.Conn) *control.Reply {
	if req.Cmd != control.CmdStatus {
		return control.FailReply(fmt.Errorf("tcpgrace: control: only status is answered on a generation's status channel, not %s", req.Cmd))
	}
	return &control.Reply{V: control.Version, OK: true, Status: c.status(false)}
}
