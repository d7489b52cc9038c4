package tcpgrace

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// reportVersion is the version of the reports a mailbox carries; a report
// of another version is ignored.
const reportVersion = 1

// Timing of a draining generation's reports.
const (
	reportEvery = 100 * time.Millisecond // how often a drain reports its connections, if they changed
	finalWait   = time.Second            // how long the final report waits for room in the mailbox
	maxReport   = 4096                   // the largest report read
)

// report is what a draining generation tells the serving one through the
// service's mailbox: its open connections while it drains, and, Final,
// how its drain ended.
type report struct {
	V           int  `json:"v"`
	PID         int  `json:"pid"`
	Generation  int  `json:"gen"`
	Connections int  `json:"conns"`
	Refused     int  `json:"refused,omitempty"` // upgrades refused after the totals were handed over
	Final       bool `json:"final,omitempty"`
	Finished    int  `json:"finished,omitempty"`
	ForceClosed int  `json:"force_closed,omitempty"`
}

// mailbox is the service's mailbox: a Unix datagram socket pair that the
// first generation makes and every generation hands to the next with its
// sockets, so that every generation holds both ends. A draining generation
// writes its reports to out; the serving generation reads them from in.
// The serving one stops reading while an upgrade hands the totals over,
// and reports wait in the socket until the next one reads them. The nil
// *mailbox (none could be made) does nothing.
type mailbox struct {
	in, out *os.File // non-blocking, so that reads on in take deadlines
	log     *slog.Logger

	mu      sync.Mutex
	reading bool          // a reader runs
	done    chan struct{} // closed when the reader has returned
	closed  bool
}

// openMailbox takes the mailbox the previous generation handed over, or
// makes one.
func openMailbox(files *wire.Files, log *slog.Logger) *mailbox {
	in, out := files.Mail()
	if in == nil {
		var err error
		if in, out, err = newMailPair(); err != nil {
			log.Warn("no mailbox: the drains of older generations will not be counted", "err", err)
			return nil
		}
	}
	return &mailbox{in: in, out: out, log: log}
}

// read starts reading reports, unless a reader runs or the mailbox is
// closed. It reads from in itself, not from a duplicate: the fds a
// generation holds do not change with it.
func (m *mailbox) read(u *Upgrader) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.reading {
		return
	}
	if err := m.in.SetReadDeadline(time.Time{}); err != nil {
		m.log.Warn("mailbox: cannot read", "err", err)
		return
	}
	m.reading, m.done = true, make(chan struct{})
	go m.receive(u, m.done)
}

// receive reads reports until in's deadline passes or in is closed.
func (m *mailbox) receive(u *Upgrader, done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, maxReport)
	for {
		n, err := m.in.Read(buf)
		if errors.Is(err, io.EOF) {
			continue // an empty datagram
		}
		if err != nil {
			return
		}
		var r report
		if json.Unmarshal(buf[:n], &r) != nil || r.V != reportVersion {
			continue
		}
		u.totals.report(r)
		if r.Final {
			u.emit(event.Event{Kind: event.OlderDrained, Child: r.PID, Generation: r.Generation,
				Finished: r.Finished, ForceClosed: r.ForceClosed})
		}
	}
}

// stopReading stops the reader, if one runs, once it has taken the report
// it may be reading: what it leaves stays in the socket.
func (m *mailbox) stopReading() {
	if m == nil {
		return
	}
	m.mu.Lock()
	reading, done := m.reading, m.done
	m.reading = false
	m.mu.Unlock()
	if !reading {
		return
	}
	m.in.SetReadDeadline(time.Unix(1, 0))
	<-done
}

// close stops reading and closes this generation's ends.
func (m *mailbox) close() {
	if m == nil {
		return
	}
	m.stopReading()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.in.Close()
		m.out.Close()
	}
}

// dup duplicates both ends for a next generation.
func (m *mailbox) dup() (in, out *os.File, err error) {
	if in, err = dupFile(m.in, "tcpgrace-mail-in"); err != nil {
		return nil, nil, err
	}
	if out, err = dupFile(m.out, "tcpgrace-mail-out"); err != nil {
		in.Close()
		return nil, nil, err
	}
	return in, out, nil
}

// handMail stops reading reports and adds the totals and the mailbox to
// what the next generation gets; the ready pipe goes before files (see
// runChild).
func (u *Upgrader) handMail(h *handed, env *wire.Env, began time.Time) {
	u.mail.stopReading()
	u.settle(true) // our own start stood: we are upgrading
	env.Tally = u.totals.carry(began)
	if u.mail == nil {
		return
	}
	in, out, err := u.mail.dup()
	if err != nil {
		u.log.Warn("mailbox: not handed on", "err", err)
		return
	}
	first := h.next()
	env.Mail = [2]int{first, first + 1}
	h.addFile(in)
	h.addFile(out)
}

// send writes one report; it waits up to wait for room in the mailbox.
func (m *mailbox) send(r report, wait time.Duration) error {
	r.V, r.PID = reportVersion, os.Getpid()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		err = sendDatagram(m.out, b)
		if !errors.Is(err, errMailFull) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reporter sends a draining generation's reports: its connections as they
// close, then how its drain ended. The nil *reporter does nothing.
type reporter struct {
	m    *mailbox
	u    *Upgrader
	stop chan struct{}
	done chan struct{}
	owed int // late refusals no report took along yet (see tally.lateRefusals)
	once sync.Once
}

// report begins the reports of a drain.
func (m *mailbox) report(u *Upgrader) *reporter {
	if m == nil {
		return nil
	}
	r := &reporter{m: m, u: u, stop: make(chan struct{}), done: make(chan struct{})}
	go r.progress()
	return r
}

// progress reports the open connections now and whenever they changed,
// until stop.
func (r *reporter) progress() {
	defer close(r.done)
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	last := -1
	late := r.u.totals.lateRefusals()
	for {
		if n := r.u.Stats().Active; n != last || late > 0 {
			// A full mailbox drops it, and a later one follows; the
			// late refusals wait for the final report then.
			if r.m.send(report{Generation: r.u.Generation(), Connections: n, Refused: late}, 0) == nil {
				last, late = n, 0
			}
		}
		select {
		case <-r.stop:
			r.owed = late
			return
		case <-t.C:
		}
	}
}

// final ends the reports with how the drain ended; only its first call
// says anything.
func (r *reporter) final(finished, forced int) {
	if r != nil {
		r.once.Do(func() { r.sendFinal(finished, forced) })
	}
}

func (r *reporter) sendFinal(finished, forced int) {
	close(r.stop)
	<-r.done
	err := r.m.send(report{Generation: r.u.Generation(), Final: true, Finished: finished, ForceClosed: forced,
		Refused: r.owed + r.u.totals.lateRefusals()}, finalWait)
	if err != nil {
		r.u.log.Warn("mailbox: the end of this drain was not reported", "err", err)
	}
}
