package tcpgrace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/takeover"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// The takeover, both sides (see internal/takeover for the exchange): the
// serving generation gives on a takeover request at its control socket
// (controlServer.takeover), a process started with Options.Takeover takes
// in New (takeOver) and waits for the giver's confirmation in Ready.

// takeover answers a takeover request: an upgrade whose next generation
// is the requester. It is refused as an upgrade request is (another
// upgrade runs, not ready yet, in a ready grace, handed over, stopping),
// but not as PID 1: the taker is no child, so this generation's exit does
// not take it along. The reply reports the outcome; the taker has had the
// first one, with its channel, before.
func (c *controlServer) takeover(req control.Request, peer control.Peer, conn net.Conn) *control.Reply {
	c.u.emit(event.Event{Kind: event.UpgradeRequested, Reason: "takeover request"})
	if err := c.upgradeRefused(); err != nil {
		c.u.refuse("takeover request", err)
		return failReply(err)
	}
	if control.PeerGone(conn) {
		c.u.log.Warn("control: takeover not started", "err", errRequesterGone)
		return control.FailReply(errRequesterGone)
	}
	ctx, cancel := req.Context(context.Background())
	defer cancel()
	begin := time.Now()
	err := c.u.handOver(requestedBy(ctx, "takeover request"), func(ctx context.Context, h *handed, env *wire.Env) (int, error) {
		return c.u.runTaker(ctx, conn, peer, h, env)
	})
	if err != nil {
		return failReply(err)
	}
	return &control.Reply{V: control.Version, OK: true, Upgrade: &control.Upgraded{
		PID: peer.PID, Generation: c.u.Generation() + 1, OldPID: os.Getpid(),
		HandoffMS: float64(time.Since(begin).Microseconds()) / 1000, PIDNamespace: control.PIDNamespace(),
	}}
}

// runTaker is the starter of a takeover: it hands h to the taker at the
// other end of conn and waits for its readiness as for a child's. The
// taker is watched on conn: its end of file is the taker's exit.
func (u *Upgrader) runTaker(ctx context.Context, conn net.Conn, peer control.Peer, h *handed, env *wire.Env) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		h.close()
		return 0, fmt.Errorf("tcpgrace: readiness pipe: %w", err)
	}
	env.Pipe = fileInode(w)
	files, err := h.files()
	if err != nil {
		h.close()
		r.Close()
		w.Close()
		return 0, fmt.Errorf("%w: %w", ErrChildFailed, err)
	}
	all := append([]*os.File{w}, files...)
	offer := control.TakeoverOffer{PID: os.Getpid(), Generation: env.Generation, PIDNamespace: control.PIDNamespace()}
	if err := takeover.Give(ctx, conn, offer, env.Encode(os.Getpid()), all); err != nil {
		closeFiles(all)
		r.Close()
		return 0, fmt.Errorf("%w: %w", ErrChildFailed, err)
	}
	u.log.Info("takeover: sockets handed to the taker", "taker", peer.PID, "taker_uid", peer.UID, "sockets", len(env.Entries))
	u.emit(event.Event{Kind: event.ChildStarted, Child: peer.PID})
	c := &child{id: peer.PID, exited: make(chan struct{}),
		stop: func() { conn.SetReadDeadline(time.Unix(1, 0)) },
		onReady: func() {
			if err := takeover.Confirm(conn); err != nil {
				u.log.Warn("takeover: confirming to the taker", "taker", peer.PID, "err", err)
			}
		}}
	go func() {
		c.err = watchTaker(conn)
		close(c.exited)
	}()
	return peer.PID, u.waitReady(ctx, c, r)
}

// watchTaker reads the taker's control connection until it ends: the
// taker keeps it open until it leaves or exits. A read deadline set by
// the child's stop ends it too.
func watchTaker(conn net.Conn) error {
	_, err := io.Copy(io.Discard, conn)
	if err == nil {
		return errors.New("its connection to the control socket closed")
	}
	return fmt.Errorf("its connection to the control socket: %w", err)
}

// takeOver is New's takeover: it takes the sockets of the generation
// that serves at opts.Takeover, unless this process was started by an
// upgrade. With nothing serving there it returns inh as it is, a cold
// start, and cold says why.
func takeOver(opts Options, inh *wire.Files) (files *wire.Files, tk *takeover.Taken, cold, err error) {
	if opts.Takeover == "" || inh.Source() == wire.EnvFDs {
		return inh, nil, nil, nil
	}
	if inh.Source() == wire.EnvListenFDs {
		return nil, nil, nil, fmt.Errorf("tcpgrace: takeover of %s: this process got sockets from systemd (LISTEN_FDS); it takes them either from systemd or from a running generation, not both", opts.Takeover)
	}
	if err := controlSupported(); err != nil {
		return nil, nil, nil, fmt.Errorf("tcpgrace: takeover of %s: %w", opts.Takeover, err)
	}
	tk, err = takeover.Take(context.Background(), opts.Takeover)
	if errors.Is(err, takeover.ErrNobody) {
		return inh, nil, err, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if tk.Offer.PIDNamespace == "" || tk.Offer.PIDNamespace != control.PIDNamespace() {
		tk.Env.Older = nil // pids of another namespace: none of ours
	}
	if files, err = wire.Open(tk.Env); err != nil {
		tk.Close()
		return nil, nil, nil, fmt.Errorf("tcpgrace: takeover of %s: %w", opts.Takeover, err)
	}
	return files, tk, nil, nil
}

// awaitGiver waits, in a taker's Ready, for the old generation's word
// after this one said ready: its confirmation (serve), its reason for
// giving up (do not serve: the error), or its end (it died: serve alone).
func (u *Upgrader) awaitGiver() error {
	if u.taken == nil {
		return nil
	}
	err := u.taken.Verdict(takeover.ReplyTimeout)
	switch {
	case err == nil:
		u.log.Info("takeover: the old generation confirmed; serving", "old", u.taken.Offer.PID)
		return nil
	case errors.Is(err, takeover.ErrGiverGone):
		u.log.Warn("takeover: the old generation is gone; serving alone", "old", u.taken.Offer.PID)
		return nil
	}
	u.taken.Close()
	return err
}
