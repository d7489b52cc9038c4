package sdnotify

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// WarnEvery is how often at most [Sender.Notify] logs lost messages: a
// manager that reads nothing would otherwise get a warning for every
// watchdog ping.
const WarnEvery = 10 * time.Second

// WarnDropped is the message of the warning that messages were lost.
const WarnDropped = "sd_notify failed; is the service manager reading?"

// Sender sends messages to one service manager. It never waits: a
// manager whose queue is full (it reads nothing) loses the message, so
// that serving, stopping and upgrading never depend on it. A nil *Sender
// sends nothing. Its methods are safe for concurrent use.
type Sender struct {
	addr *net.UnixAddr

	mu     sync.Mutex
	conn   *net.UnixConn // opened at the first message, unbound and CLOEXEC
	lost   int           // messages dropped since the last warning
	warned time.Time     // when the last warning was due; zero: never
}

// NewSender returns a sender to socket, a path or "@name" for an
// abstract socket ([Env.Socket]); nil (which sends nothing) for "".
func NewSender(socket string) *Sender {
	if socket == "" {
		return nil
	}
	return &Sender{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}} // Go maps a leading '@' to the abstract namespace
}

// Enabled reports whether a service manager listens.
func (s *Sender) Enabled() bool { return s != nil }

// Socket is the manager's address, "" for a nil Sender.
func (s *Sender) Socket() string {
	if s == nil {
		return ""
	}
	return s.addr.Name
}

// Send writes one message of KEY=VALUE lines. It never waits: when the
// manager's queue is full the message is dropped, counted, and the error
// returned. A nil Sender does nothing and returns nil.
func (s *Sender) Send(lines ...string) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.sendLocked([]byte(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		s.lost++
	}
	return err
}

// openLocked opens the socket messages are sent from, if need be; s.mu
// is held.
func (s *Sender) openLocked() error {
	if s.conn != nil {
		return nil
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // unbound, CLOEXEC
	if err != nil {
		return fmt.Errorf("sd_notify socket: %w", err)
	}
	s.conn = c
	return nil
}

// sendLocked opens the socket if need be and sends msg; s.mu is held.
func (s *Sender) sendLocked(msg []byte) error {
	if err := s.openLocked(); err != nil {
		return err
	}
	if err := sendNow(s.conn, msg, s.addr); err != nil {
		return fmt.Errorf("sd_notify to %s (message dropped): %w", s.addr.Name, err)
	}
	return nil
}

// Notify sends one message like [Sender.Send] and logs a failure to log
// as a warning ([WarnDropped], with the error and how many messages were
// lost since the last warning): the first failure, then at most one every
// [WarnEvery].
func (s *Sender) Notify(log *slog.Logger, lines ...string) {
	if err := s.Send(lines...); err != nil {
		if lost, due := s.warnDue(time.Now()); due {
			log.Warn(WarnDropped, "err", err, "lost", lost)
		}
	}
}

// warnDue reports whether a failed send should be logged now: the first
// failure, then at most one every WarnEvery. lost is how many messages
// were dropped since the last warning, this one included.
func (s *Sender) warnDue(now time.Time) (lost int, due bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.warned.IsZero() && now.Sub(s.warned) < WarnEvery {
		return 0, false
	}
	lost, s.lost, s.warned = s.lost, 0, now
	return lost, true
}

// Close closes the socket messages are sent from, if one was opened; a
// later message opens a new one.
func (s *Sender) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
