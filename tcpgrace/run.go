package tcpgrace

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/errjoin"
)

// Run is Serve for a server with its own accept loop on the Upgrader's
// listeners, such as gRPC; for net/http use [Server.RunHTTP], which builds
// on it. serve runs that server until its listeners close, e.g.
// func() error { return srv.Serve(ln) }; Run calls it in a
// goroutine once, so call Ready before Run. Run handles signals as Serve
// does until this generation must leave: after a successful upgrade, a
// stop signal or a stop request on the control socket, ctx's end, or
// serve returning an error other than a closed listener.
//
// Then it logs "draining", waits (at most a second) until the server has
// taken what waits in the accept queues of the Upgrader's listeners, and
// calls shutdown with a context that ends at DrainTimeout, or at once on
// a second stop signal. shutdown must stop the
// server gracefully, and hard when its context ends first (grpc.Server:
// GracefulStop, then Stop), so that serve returns. Run waits for serve, then shuts the Upgrader down
// (connections still tracked, the PID file, the sockets) within the same
// deadline.
//
// Run returns nil after an upgrade or a stop signal, ctx's error when ctx
// ended, an error wrapping [ErrServeFailed] when serve failed, joined with
// shutdown's and the drain's errors.
func (s *Server) Run(ctx context.Context, serve func() error, shutdown func(context.Context) error) error {
	if s.Upgrader == nil || serve == nil || shutdown == nil {
		return errors.New("tcpgrace: Run needs an Upgrader, a serve and a shutdown function")
	}
	served := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = serve()
		close(served)
	}()
	loopCtx, cancel := context.WithCancel(ctx)
	failed := make(chan struct{})
	go func() {
		select {
		case <-served:
			if serveErr != nil && !errors.Is(serveErr, net.ErrClosed) {
				close(failed) // a closed listener is the hand-off; anything else ends serving
				cancel()
			}
		case <-loopCtx.Done():
		}
	}()
	why, cause := s.loop(loopCtx, nil, nil)
	cancel()
	reason := string(why)
	select {
	case <-failed:
		reason, cause = "serve failed", wrap(ErrServeFailed, serveErr)
	default:
	}
	s.Upgrader.log.Info("draining", "reason", reason)
	return errjoin.Join(cause, s.drainOwn(why.stop(), shutdown, served))
}

// drainOwn stops a server with its own accept loop, waits for it, and
// shuts the Upgrader down, all within DrainTimeout.
func (s *Server) drainOwn(stopped bool, shutdown func(context.Context) error, served <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.drainTimeout())
	defer cancel()
	go s.signalsWhileDraining(ctx, cancel, stopped)
	s.Upgrader.waitAcceptQueues(ctx) // the server still accepts: let it take what is queued
	begin, open := time.Now(), s.Upgrader.Stats().Active
	s.Upgrader.beginDrain(ctx, s.Upgrader.currentState() == handedOff) // what the server cuts at the deadline counts as cut
	err := shutdown(ctx)
	if err != nil {
		s.Upgrader.log.Warn("drain: the server's shutdown", "err", err)
	}
	<-served
	return errjoin.Join(err, s.Upgrader.shutdown(ctx, begin, open)) // its "drained" line reports the outcome
}
