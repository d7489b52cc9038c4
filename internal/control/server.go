package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// Defaults of [ServerOptions]: the request must arrive within
// ReadTimeout of the accept, the reply be taken within WriteTimeout, and
// at most MaxConns connections are served at once (more are told so and
// closed).
const (
	ReadTimeout  = 2 * time.Second
	WriteTimeout = time.Second
	MaxConns     = 64
)

// Accept back-off on temporary errors, as net/http's: 5 ms doubling to 1 s.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
	// refuseTimeout bounds the reply to a connection that is not admitted.
	refuseTimeout = 10 * time.Millisecond
)

// Peer is the process that asks: its credentials (SO_PEERCRED), taken
// as it connected.
type Peer struct {
	PID int
	UID uint32
}

// Handler carries out one request of peer, read and checked, and returns
// the reply, which the server writes. conn is the client's connection,
// to look at ([PeerGone]), not to read or write. It runs in the goroutine
// of the connection; the server does not wait for it beyond
// [Server.Close]'s context.
type Handler func(req Request, peer Peer, conn net.Conn) *Reply

// ServerOptions configure a [Server]. Handler is required; every other
// field has a default.
type ServerOptions struct {
	Handler Handler
	// Name begins the text of every error the server replies itself
	// (refused, busy, bad request), such as "tcpgrace: control".
	Name string
	// LogPrefix begins the server's own log messages, such as "control"
	// (messages read "control: request refused").
	LogPrefix string
	Logger    *slog.Logger // slog.Default() if nil
	// ReadTimeout bounds reading the request (default [ReadTimeout]).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the reply (default [WriteTimeout]).
	WriteTimeout time.Duration
	// MaxConns bounds the connections served at once (default [MaxConns]).
	MaxConns int
}

// Server answers the control protocol on one listener: it accepts
// (backing off on temporary errors), admits at most MaxConns connections
// at once (telling the others it is busy), lets only root and its own
// effective uid ask (SO_PEERCRED), reads one request line within
// ReadTimeout, hands it to the Handler and writes its reply within
// WriteTimeout, then closes the connection.
//
// The caller owns the listener: it closes it (which ends the accept loop
// for good) or hands it on. Start, Pause and Close may be called from one
// goroutine at a time.
type Server struct {
	ln   net.Listener
	opts ServerOptions
	log  *slog.Logger
	self uint32 // the effective uid that may ask besides root

	pauseMu  sync.Mutex // serialises Pause
	mu       sync.Mutex
	closed   bool
	quit     chan struct{} // closed to end the running accept loop; nil while none runs
	loopDone chan struct{} // closed when the running accept loop ends
	conns    map[net.Conn]struct{}
	handlers sync.WaitGroup
	done     chan struct{} // closed by end
	doneOnce sync.Once
}

// NewServer makes a server of ln; it accepts nothing before Start.
func NewServer(ln net.Listener, opts ServerOptions) *Server {
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = ReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = WriteTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = MaxConns
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{ln: ln, opts: opts, log: log, self: uint32(os.Geteuid()),
		conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
}

// deadliner is a listener whose Accept can be cut short.
type deadliner interface{ SetDeadline(time.Time) error }

// Start runs the accept loop, unless it runs already, the server is
// closed or its listener was closed. It returns at once.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.quit != nil || s.isDone() {
		return
	}
	if d, ok := s.ln.(deadliner); ok {
		d.SetDeadline(time.Time{})
	}
	s.quit, s.loopDone = make(chan struct{}), make(chan struct{})
	go s.acceptLoop(s.quit, s.loopDone)
}

// Pause ends the accept loop and returns once it has ended; connections
// not yet accepted wait in the listener's queue (for a Start, or for the
// process the listener is handed to). Requests accepted already are
// still answered. It cuts Accept short with a deadline, so the listener
// must have SetDeadline (a *net.UnixListener has); with another one it
// waits until the listener is closed.
func (s *Server) Pause() {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	s.mu.Lock()
	quit, loopDone := s.quit, s.loopDone
	s.quit, s.loopDone = nil, nil
	s.mu.Unlock()
	if quit == nil {
		return
	}
	close(quit)
	if d, ok := s.ln.(deadliner); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	<-loopDone
}

// Busy reports whether a request is being read, carried out or
// answered.
func (s *Server) Busy() bool { return s.Open() > 0 }

// Open is the number of connections admitted and not yet closed.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Done is closed once the server accepts no more for good: its listener
// was closed, Accept failed, or Close was called. (A Pause does not
// close it.)
func (s *Server) Done() <-chan struct{} { return s.done }

// Close ends the server: it ends the accept loop for good (the listener
// stays open, the caller's to close), then waits for the requests being
// answered until ctx ends, when it closes their connections and returns
// ctx's error without waiting further (see [Server.Wait]). It returns nil
// once every request was answered. Calling it twice is safe.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Pause()
	s.end()
	finished := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for conn := range s.conns {
		conn.Close()
	}
	s.mu.Unlock()
	return ctx.Err()
}

// Wait blocks until every request admitted has been answered (or its
// connection closed) and its handler has returned. Call it after Close.
func (s *Server) Wait() { s.handlers.Wait() }

// end closes Done, once.
func (s *Server) end() { s.doneOnce.Do(func() { close(s.done) }) }

// isDone reports whether Done is closed.
func (s *Server) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// acceptLoop accepts until Pause (quit, and a deadline that cuts Accept
// short), the listener's close or a permanent error.
func (s *Server) acceptLoop(quit <-chan struct{}, loopDone chan<- struct{}) {
	defer close(loopDone)
	delay := minAcceptDelay
	for {
		conn, err := s.ln.Accept()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded): // Pause
			return
		case errors.Is(err, net.ErrClosed):
			s.end()
			return
		case sockfd.TemporaryAccept(err):
			s.log.Warn(s.opts.LogPrefix+": accept: backing off", "delay", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-quit:
				return
			}
			delay = min(2*delay, maxAcceptDelay)
			continue
		default:
			s.log.Error(s.opts.LogPrefix+": accept stopped", "path", s.ln.Addr().String(), "err", err)
			s.end()
			return
		}
		delay = minAcceptDelay
		if err := s.admit(conn); err != nil {
			refuse(conn, err)
			continue
		}
		go s.handle(conn)
	}
}

// admit counts conn in, unless MaxConns are open.
func (s *Server) admit(conn net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= s.opts.MaxConns {
		return fmt.Errorf("%s: busy, %d requests open; try again", s.opts.Name, len(s.conns))
	}
	s.conns[conn] = struct{}{}
	s.handlers.Add(1)
	return nil
}

// refuse answers a connection that is not admitted, briefly, and closes
// it.
func refuse(conn net.Conn, err error) {
	conn.SetWriteDeadline(time.Now().Add(refuseTimeout))
	WriteReply(conn, RefuseReply(err))
	conn.Close()
}

// handle answers one admitted connection: the peer's credentials, one
// request, one reply, close.
func (s *Server) handle(conn net.Conn) {
	defer s.handlers.Done()
	defer func() {
		conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	rep := s.answer(conn)
	conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if err := WriteReply(conn, rep); err != nil {
		s.log.Warn(s.opts.LogPrefix+": the reply was not taken", "err", err)
	}
}

// answer checks the peer, reads its request and has the Handler carry
// it out.
func (s *Server) answer(conn net.Conn) *Reply {
	pid, uid, err := PeerCred(conn)
	if err == nil {
		err = checkPeer(s.opts.Name, uid, s.self)
	}
	if err != nil {
		s.log.Warn(s.opts.LogPrefix+": request refused", "peer_pid", pid, "peer_uid", uid, "err", err)
		return deniedReply(err)
	}
	conn.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout))
	req, err := readRequest(conn, s.opts.ReadTimeout)
	if err != nil {
		s.log.Warn(s.opts.LogPrefix+": bad request", "peer_pid", pid, "err", err)
		return badRequestReply(fmt.Errorf("%s: %w", s.opts.Name, err))
	}
	return s.opts.Handler(req, Peer{PID: pid, UID: uid}, conn)
}

// checkPeer lets root and the server's own (effective) uid self in; name
// begins the error.
func checkPeer(name string, uid, self uint32) error {
	if uid == 0 || uid == self {
		return nil
	}
	return fmt.Errorf("%s: permission denied: uid %d may not ask; only root and uid %d may", name, uid, self)
}

// FailReply is the reply that reports err as the failure of the
// operation ([CodeFailed]): the server tried, and it failed.
func FailReply(err error) *Reply {
	return &Reply{V: Version, Code: CodeFailed, Error: err.Error()}
}

// RefuseReply is the reply that refuses the request for now
// ([CodeRefused]), for the reason err: the server did nothing, and the
// client may retry later (another upgrade runs, not ready yet, too many
// generations draining, a ready grace, stopping).
func RefuseReply(err error) *Reply {
	return &Reply{V: Version, Code: CodeRefused, Error: err.Error()}
}

// badRequestReply is the server's reply to a request it did not
// understand ([CodeBadRequest]).
func badRequestReply(err error) *Reply {
	return &Reply{V: Version, Code: CodeBadRequest, Error: err.Error()}
}

// deniedReply is the server's reply to a peer that may not ask
// ([CodeDenied]).
func deniedReply(err error) *Reply {
	return &Reply{V: Version, Code: CodeDenied, Error: err.Error()}
}

// WriteReply writes rep as one line of JSON.
func WriteReply(w io.Writer, rep *Reply) error {
	line, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = w.Write(append(line, '\n'))
	return err
}
