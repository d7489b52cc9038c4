//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// The bounds of the control server on one request (the request must
// arrive within controlReadTimeout, the reply be taken within
// controlWriteTimeout), and the control socket's name in the registry.
const (
	controlReadTimeout  = control.ReadTimeout
	controlWriteTimeout = control.WriteTimeout
	controlName         = "tcpgrace-run-control"
)

// controlSocket answers tcpgrace upgrade, status, stop and reload on
// Config.Control, in the protocol of package internal/control, with the
// supervisor's [Supervisor.Upgrade] and [Supervisor.Status], a stop as on
// SIGTERM and a reload as on SIGHUP (answered once the signal was sent to
// the serving instance: the supervisor cannot know when the instance's
// reload is over). Refusals for now (an upgrade in progress, too many
// instances, nothing serving yet, stopping) carry the code "refused";
// other failures "failed". Only root and the supervisor's own uid may ask
// (SO_PEERCRED). An upgrade or a stop whose client closed its connection
// before the request was read (the supervisor was stopped or hung
// meanwhile, and the client gave up) is not carried out. It is not handed
// to instances; a self-upgrade passes it on, so its path stays valid.
type controlSocket struct {
	s     *Supervisor
	path  string
	ln    net.Listener
	owned *sockfd.FileID // the file this supervisor bound, removed at exit if its path still leads to it
	srv   *control.Server
}

func newControlSocket(s *Supervisor, path string, ln net.Listener, owned *sockfd.FileID) *controlSocket {
	c := &controlSocket{s: s, path: path, ln: ln, owned: owned}
	c.srv = control.NewServer(ln, control.ServerOptions{Handler: c.answer, Name: "tcpgrace run: control",
		LogPrefix: "control socket", Logger: s.log})
	return c
}

// busy reports whether a request is being read, carried out or
// answered.
func (c *controlSocket) busy() bool { return c != nil && c.srv.Busy() }

// start runs the accept loop.
func (c *controlSocket) start() {
	if c == nil {
		return
	}
	c.srv.Start()
	c.s.log.Info("control socket: answering", "path", c.path)
}

// pause ends the accept loop, for a self-upgrade: connections not yet
// accepted wait in the socket's queue for the next image.
func (c *controlSocket) pause() {
	if c == nil {
		return
	}
	c.srv.Pause()
}

// close ends the control socket at exit: handlers get up to a second to
// send their replies (a stop's, say), then their connections are closed;
// the file goes if it is ours.
func (c *controlSocket) close() {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.srv.Close(ctx)
	c.ln.Close()
	if c.owned != nil {
		if id, err := sockfd.Stat(c.path); err == nil && id == *c.owned {
			os.Remove(c.path)
		}
	}
}

// fd is the listener's own fd, for a self-upgrade.
func (c *controlSocket) fd() (int, error) {
	sc, ok := c.ln.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("control socket: a %T has no fd", c.ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	err = rc.Control(func(s uintptr) { fd = int(s) })
	return fd, err
}

// answer carries out one request: upgrade, stop and reload, unless their
// requester is gone; status.
func (c *controlSocket) answer(req control.Request, peer control.Peer, conn net.Conn) *control.Reply {
	if req.Cmd != control.CmdStatus {
		c.s.log.Info("control request", "cmd", req.Cmd, "peer_pid", peer.PID, "peer_uid", peer.UID)
	}
	if req.Cmd != control.CmdStatus && control.PeerGone(conn) {
		c.s.log.Warn("control socket: request not carried out", "cmd", req.Cmd, "err", errRequesterGone)
		return control.FailReply(errRequesterGone)
	}
	switch req.Cmd {
	case control.CmdUpgrade:
		return c.upgrade(req)
	case control.CmdStop:
		return c.stop()
	case control.CmdReload:
		return c.reload()
	case control.CmdTakeover:
		return c.takeover(req, peer, conn)
	}
	return c.status()
}

// errorReply is the reply that reports err: a refusal for now
// (control.CodeRefused) when the supervisor did nothing and a later
// request may succeed, a failure (control.CodeFailed) otherwise.
func errorReply(err error) *control.Reply {
	for _, refused := range []error{ErrStopping, ErrUpgradeInProgress, ErrTooManyInstances, ErrNotServing, ErrTakeoverRunning} {
		if errors.Is(err, refused) {
			return control.RefuseReply(err)
		}
	}
	return control.FailReply(err)
}

// errRequesterGone refuses an upgrade or a stop whose client closed its
// connection before the request was read (the supervisor was stopped
// meanwhile, say): the client has given up and reported a failure, so
// carrying the request out later would surprise everyone.
var errRequesterGone = errors.New("tcpgrace run: control: the requester is gone (it closed its connection before its request was read): not carried out")

func (c *controlSocket) upgrade(req control.Request) *control.Reply {
	ctx, cancel := req.Context(context.Background())
	defer cancel()
	begin := time.Now()
	res, err := c.s.upgradeBy(ctx, "control request")
	if err != nil {
		return errorReply(err)
	}
	return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{PID: res.PID,
		Generation: res.Generation, OldPID: res.OldPID, HandoffMS: float64(time.Since(begin).Microseconds()) / 1000,
		PIDNamespace: control.PIDNamespace()}}
}

// stop begins the stop SIGTERM begins, and replies once the signal went
// to every instance.
func (c *controlSocket) stop() *control.Reply {
	ctx, cancel := context.WithTimeout(context.Background(), controlReadTimeout)
	defer cancel()
	if err := c.s.do(ctx, func() { c.s.stopBy(unix.SIGTERM, "control request") }); err != nil {
		return errorReply(err)
	}
	return &control.Reply{V: control.Version, OK: true, Stop: &control.Stopping{PID: os.Getpid(), Connections: -1, PIDNamespace: control.PIDNamespace()}}
}

func (c *controlSocket) status() *control.Reply {
	ctx, cancel := context.WithTimeout(context.Background(), controlReadTimeout)
	defer cancel()
	st, err := c.s.Status(ctx)
	if err != nil {
		return errorReply(err)
	}
	return &control.Reply{V: control.Version, OK: true, Status: c.s.controlStatus(st)}
}

// reload forwards SIGHUP to the serving instance, as a SIGHUP to the
// supervisor does, and replies once it was sent: whether and when the
// instance's reload is over only the instance knows.
func (c *controlSocket) reload() *control.Reply {
	ctx, cancel := context.WithTimeout(context.Background(), controlReadTimeout)
	defer cancel()
	var res ReloadResult
	var herr error
	if err := c.s.do(ctx, func() { res, herr = c.s.forwardHUP() }); err != nil {
		return errorReply(err)
	}
	if herr != nil {
		return errorReply(herr)
	}
	return &control.Reply{V: control.Version, OK: true, Reload: &control.Reloaded{PID: res.PID,
		Generation: res.Generation, PIDNamespace: control.PIDNamespace()}}
}

// controlStatus is st in the control protocol's terms: the supervisor
// answers, Generation and State are the service's (the serving instance's
// generation), draining instances are the older generations, and the
// instances, restarts and last failure are in Supervisor.
func (s *Supervisor) controlStatus(st Status) *control.Status {
	file, _ := os.Executable()
	cs := &control.Status{PID: st.PID, Executable: s.cfg.Command[0], File: file, Started: s.started,
		Connections: -1, Listeners: []control.Listener{}, Older: []control.Older{}, State: "serving", PIDNamespace: control.PIDNamespace(),
		Supervisor: &control.Supervisor{Restarts: st.Restarts, Crashes: st.Crashes,
			RestartInMS: st.RestartIn.Milliseconds(), LastFailure: st.LastFailure, Instances: []control.Instance{}}}
	for _, sk := range s.socks {
		cs.Listeners = append(cs.Listeners, control.Listener{Name: sk.Name, Network: sk.Network, Address: sk.addr})
	}
	serving := false
	for _, in := range st.Instances {
		ci := control.Instance{PID: in.PID, Generation: in.Generation, State: in.State, Since: in.Since, Status: in.Status}
		if in.MainPID != in.PID {
			ci.MainPID = in.MainPID
		}
		cs.Supervisor.Instances = append(cs.Supervisor.Instances, ci)
		switch in.State {
		case "serving":
			cs.Generation, serving = in.Generation, true
		case "starting":
			cs.State = "upgrading"
		case "draining":
			cs.Older = append(cs.Older, control.Older{PID: in.MainPID, Generation: in.Generation, Connections: -1,
				Error: "an instance of tcpgrace run: its connections are its own"})
		}
	}
	switch {
	case st.Stopping:
		cs.State = "stopping"
	case !serving && cs.State != "upgrading":
		cs.State = "restarting"
	}
	return cs
}

// boundAddr is the address a socket is bound to (a port 0 resolved).
func boundAddr(sk *socket) string {
	sa, err := unix.Getsockname(sk.fd)
	if err != nil {
		return sk.Address
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		return a.Name
	}
	return sk.Address
}
