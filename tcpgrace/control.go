package tcpgrace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// controlName is the registry name of the control socket, its path
// appended: a next generation configured with another path asks for
// another name, and the old socket, unclaimed, is closed at its Ready.
const controlName = "tcpgrace-control:"

// controlMode is the permission of the control socket's file, whatever
// Options.UnixMode says: its owner's only (root and its uid are let in by
// their credentials anyway; the mode keeps the others from connecting).
const controlMode = 0o600

// Bounds on one control connection, so that no client can hold anything
// up: the request must arrive within controlReadTimeout of the accept,
// the reply be taken within controlWriteTimeout, and at most
// controlMaxConns connections are served at once (more are told so and
// closed).
const (
	controlReadTimeout  = 2 * time.Second
	controlWriteTimeout = time.Second
	controlMaxConns     = 64
	// olderStatusTimeout bounds the question to one draining generation.
	olderStatusTimeout = 500 * time.Millisecond
)

// controlServer answers the control socket ([Options.Control]) of one
// generation, and its status channel: a socket of its own on which it
// answers status while it drains (see statusChannelName). Both are served
// from Ready on, the control socket until this generation hands over or
// stops, the status channel until Shutdown has drained.
type controlServer struct {
	u           *Upgrader
	path        string
	ln          net.Listener // the registry's socket, accepted from without tracking
	started     time.Time
	readTimeout time.Duration

	stopReq  chan struct{}   // a Server loop takes from it: the stop handshake
	leaveCtx context.Context // ends when a Server loop ends: this generation leaves
	leave    context.CancelFunc
	done     chan struct{} // closed by controlDone
	lnDone   chan struct{} // closed when the accept loop of the control socket itself ends
	looping  chan struct{} // closed when the first Server loop starts
	firstRun sync.Once

	mu      sync.Mutex
	serving bool // the accept loops run
	closed  bool // controlDone was called: no more connections
	loops   int  // Server loops that take stop requests
	leaving bool
	next    int // the pid the successful upgrade started
	side    net.Listener
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup // accept loops and handlers
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
	c := &controlServer{u: u, path: path, ln: ln.(*listener).Listener, started: time.Now(),
		readTimeout: controlReadTimeout, stopReq: make(chan struct{}), done: make(chan struct{}),
		lnDone: make(chan struct{}), looping: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	c.leaveCtx, c.leave = context.WithCancel(context.Background())
	u.ctl = c
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
		c.side = side
		c.wg.Add(1)
		go c.acceptLoop(side, true)
	}
	c.wg.Add(1)
	go func() {
		defer close(c.lnDone)
		c.acceptLoop(c.ln, false)
	}()
	u.log.Info("control socket: answering", "path", c.path)
}

// controlUpgraded records the outcome of an upgrade: Upgrade calls it.
func (u *Upgrader) controlUpgraded(pid int, err error) {
	if u.ctl == nil || err != nil {
		return
	}
	u.ctl.mu.Lock()
	u.ctl.next = pid
	u.ctl.mu.Unlock()
}

// controlLoop is called by a Server loop as it starts: it returns the
// channel on which stop requests arrive and the function to call as the
// loop ends, after which this generation counts as leaving (an upgrade
// requested then is refused, one running is cancelled).
func (u *Upgrader) controlLoop() (<-chan struct{}, func()) {
	c := u.ctl
	if c == nil {
		return nil, func() {}
	}
	c.mu.Lock()
	c.loops++
	c.mu.Unlock()
	c.firstRun.Do(func() { close(c.looping) })
	return c.stopReq, func() {
		c.mu.Lock()
		c.loops--
		c.leaving = true
		c.mu.Unlock()
		c.leave()
	}
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
	side := c.side
	c.mu.Unlock()
	if first {
		close(c.done)
		c.leave()
		if side != nil { // the control socket itself is closed with the registry
			side.Close()
		}
	}
	finished := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	<-finished
}

// acceptLoop serves ln until it is closed. On the status channel
// (sideOnly) only status is answered.
func (c *controlServer) acceptLoop(ln net.Listener, sideOnly bool) {
	defer c.wg.Done()
	delay := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		switch {
		case errors.Is(err, net.ErrClosed):
			return
		case err != nil && isTemporary(err):
			select {
			case <-time.After(delay):
			case <-c.done:
				return
			}
			delay = min(2*delay, time.Second)
			continue
		case err != nil:
			c.u.log.Error("control: accept stopped", "path", c.path, "err", err)
			return
		}
		delay = 5 * time.Millisecond
		if err := c.admit(conn); err != nil {
			c.refuse(conn, err)
			continue
		}
		go c.handle(conn, sideOnly)
	}
}

// admit counts conn in, unless too many are open or the server is done.
func (c *controlServer) admit(conn net.Conn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return errors.New("tcpgrace: control: this generation is shutting down")
	case len(c.conns) >= controlMaxConns:
		return fmt.Errorf("tcpgrace: control: busy, %d requests open; try again", len(c.conns))
	}
	c.conns[conn] = struct{}{}
	c.wg.Add(1)
	return nil
}

// refuse answers a connection that is not admitted, briefly, and closes it.
func (c *controlServer) refuse(conn net.Conn, err error) {
	conn.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	control.WriteReply(conn, control.FailReply(err))
	conn.Close()
}

// handle answers one connection: the peer's credentials, one request,
// one reply, close.
func (c *controlServer) handle(conn net.Conn, sideOnly bool) {
	defer c.wg.Done()
	defer func() {
		conn.Close()
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
	}()
	rep := c.answer(conn, sideOnly)
	conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	if err := control.WriteReply(conn, rep); err != nil {
		c.u.log.Warn("control: the reply was not taken", "err", err)
	}
}

// answer checks the peer, reads its request and carries it out.
func (c *controlServer) answer(conn net.Conn, sideOnly bool) *control.Reply {
	pid, uid, err := control.PeerCred(conn)
	if err == nil {
		err = checkPeer(uid, uint32(os.Geteuid()))
	}
	if err != nil {
		c.u.log.Warn("control: request refused", "peer_pid", pid, "peer_uid", uid, "err", err)
		return control.FailReply(err)
	}
	conn.SetReadDeadline(time.Now().Add(c.readTimeout))
	req, err := readRequest(conn, c.readTimeout)
	if err != nil {
		c.u.log.Warn("control: bad request", "peer_pid", pid, "err", err)
		return control.FailReply(fmt.Errorf("tcpgrace: control: %w", err))
	}
	if sideOnly && req.Cmd != control.CmdStatus {
		return control.FailReply(fmt.Errorf("tcpgrace: control: only status is answered on a generation's status channel, not %s", req.Cmd))
	}
	switch {
	case sideOnly:
	case req.Cmd == control.CmdStatus: // a monitor may poll it
		c.u.log.Debug("control request", "cmd", req.Cmd, "peer_pid", pid, "peer_uid", uid)
	default:
		c.u.log.Info("control request", "cmd", req.Cmd, "peer_pid", pid, "peer_uid", uid)
	}
	switch req.Cmd {
	case control.CmdUpgrade:
		return c.upgrade(req, conn)
	case control.CmdStop:
		return c.stop(conn)
	}
	return &control.Reply{V: control.Version, OK: true, Status: c.status(!sideOnly)}
}

// checkPeer lets root and the server's own (effective) uid in.
func checkPeer(uid, self uint32) error {
	if uid == 0 || uid == self {
		return nil
	}
	return fmt.Errorf("tcpgrace: control: permission denied: uid %d may not ask; only root and uid %d may", uid, self)
}

// readRequest reads one request line, of at most control.MaxRequestLen
// bytes, newline included (a request cut off by the end of the stream
// counts as a line).
func readRequest(r io.Reader, timeout time.Duration) (control.Request, error) {
	buf := make([]byte, 0, 512)
	chunk := make([]byte, 512)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && i < control.MaxRequestLen {
			return control.ParseRequest(buf[:i])
		}
		if len(buf) >= control.MaxRequestLen {
			return control.Request{}, fmt.Errorf("request longer than %d bytes", control.MaxRequestLen)
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return control.ParseRequest(buf)
		case errors.Is(err, io.EOF):
			return control.Request{}, errors.New("closed without a request")
		case errors.As(err, &ne) && ne.Timeout():
			return control.Request{}, fmt.Errorf("no complete request within %v (%d bytes read)", timeout, len(buf))
		default:
			return control.Request{}, fmt.Errorf("reading the request: %w", err)
		}
	}
}
