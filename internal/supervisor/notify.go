//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxNote bounds one sd_notify message; a longer one is dropped whole.
const maxNote = 4096

// note is one sd_notify message: KEY=VALUE lines from the process pid,
// as the kernel vouches for it (SCM_CREDENTIALS).
type note struct {
	pid    int
	fields map[string]string
}

// notifySocket is the datagram socket every instance finds in
// NOTIFY_SOCKET, in a directory of its own that only the supervisor's
// user can enter. SO_PASSCRED makes the kernel attach the sender's pid to
// every message, so only messages from instances count, whatever else
// finds the socket.
type notifySocket struct {
	dir, path string
	lock      *os.File // the runtime directory's lock (rundir.go), held until close
	conn      *net.UnixConn
	log       *slog.Logger
	done      chan struct{} // closed when the reader stops; nil while none runs
}

// newNotifySocket makes the runtime directory (removing those of killed
// supervisors) and binds the socket in it.
func newNotifySocket(log *slog.Logger) (*notifySocket, error) {
	dir, lock, err := makeRunDir(log)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err == nil {
		err = passCred(conn)
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		os.RemoveAll(dir)
		lock.Close()
		return nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	return &notifySocket{dir: dir, path: path, lock: lock, conn: conn, log: log}, nil
}

// adoptNotifySocket takes the notify socket a previous image of the
// supervisor passed as fd, and the runtime directory's lock as lockFD.
func adoptNotifySocket(dir string, fd, lockFD int, log *slog.Logger) (*notifySocket, error) {
	lock, err := adoptRunDirLock(dir, lockFD)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "notify")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("notify socket: inherited fd %d: %w", fd, err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		lock.Close()
		return nil, fmt.Errorf("notify socket: inherited fd %d is a %T", fd, c)
	}
	return &notifySocket{dir: dir, path: filepath.Join(dir, "notify"), lock: lock, conn: conn, log: log}, nil
}

func passCred(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_PASSCRED: %w", serr)
	}
	return nil
}

// start runs the reader, which sends every message to out until stop.
func (n *notifySocket) start(out chan<- note) {
	n.conn.SetReadDeadline(time.Time{})
	n.done = make(chan struct{})
	go n.read(out, n.done)
}

// stop ends the reader and waits for it, handing every message it read
// to deliver meanwhile (the loop, which cannot receive while it waits
// here). Messages not yet read stay queued in the socket.
func (n *notifySocket) stop(in <-chan note, deliver func(note)) {
	if n.done == nil {
		return
	}
	n.conn.SetReadDeadline(time.Unix(1, 0))
	for reading := true; reading; {
		select {
		case m := <-in:
			deliver(m)
		case <-n.done:
			reading = false
		}
	}
	for {
		select {
		case m := <-in:
			deliver(m)
		default:
			n.done = nil
			return
		}
	}
}

// oobSize holds the sender's credentials and a few fds (which are closed).
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4*16)

func (n *notifySocket) read(out chan<- note, done chan<- struct{}) {
	defer close(done)
	buf, oob := make([]byte, maxNote+1), make([]byte, oobSize)
	for {
		nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			n.log.Warn("notify socket", "err", err)
			time.Sleep(10 * time.Millisecond) // no busy loop on a persistent error
			continue
		}
		if m, ok := n.message(buf[:nb], oob[:noob], flags); ok {
			out <- m
		}
	}
}

// message is the note of one datagram, b with its control messages oob
// and recvmsg's flags; false, with a warning, for one that does not count.
func (n *notifySocket) message(b, oob []byte, flags int) (note, bool) {
	pid, ok := credentials(oob)
	switch {
	case !ok:
		n.log.Warn("notify socket: a message without the sender's credentials, ignored")
	case len(b) > maxNote || flags&unix.MSG_TRUNC != 0:
		n.log.Warn("notify socket: a message longer than the limit, ignored", "sender", pid, "limit", maxNote)
	default:
		return note{pid: pid, fields: parseNote(string(b))}, true
	}
	return note{}, false
}

// drain hands deliver every message sent before it was called, in order:
// those the reader already read, then those still queued in the socket,
// read here without waiting; then the reader starts again, sending to
// out. The loop drains before it acts on the exit of an instance's
// process, so that what the process said before it exited (a MAINPID=
// naming its successor) counts first, as systemd reads its notify socket
// before it reaps. Without a reader running (none yet, or during a
// self-upgrade) it does nothing: the messages stay queued.
func (n *notifySocket) drain(out chan note, deliver func(note)) {
	if n == nil || n.done == nil {
		return
	}
	n.stop(out, deliver)
	n.readQueued(deliver)
	n.start(out)
}

// readQueued hands deliver every message queued in the socket, without
// waiting for more.
func (n *notifySocket) readQueued(deliver func(note)) {
	rc, err := n.conn.SyscallConn()
	if err != nil {
		n.log.Warn("notify socket", "err", err)
		return
	}
	buf, oob := make([]byte, maxNote+1), make([]byte, oobSize)
	var queued []note
	rc.Control(func(fd uintptr) {
		for {
			nb, noob, flags, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return // EAGAIN: nothing is left
			}
			if m, ok := n.message(buf[:nb], oob[:noob], flags); ok {
				queued = append(queued, m)
			}
		}
	})
	for _, m := range queued {
		deliver(m)
	}
}

// credentials is the sender's pid from the control messages, closing any
// fds that came along (FDSTORE=1, which the supervisor does not keep).
func credentials(oob []byte) (int, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	pid, ok := 0, false
	for i := range msgs {
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			pid, ok = int(cred.Pid), true
		}
	}
	return pid, ok
}

// parseNote splits a message into its KEY=VALUE lines; other lines are
// ignored, as systemd does.
func parseNote(msg string) map[string]string {
	fields := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			fields[k] = v
		}
	}
	return fields
}

// close closes the socket and removes its directory, then lets go of the
// directory's lock.
func (n *notifySocket) close() {
	n.conn.Close()
	os.RemoveAll(n.dir)
	n.lock.Close()
}

// fd is the socket's own fd, for a self-upgrade.
func (n *notifySocket) fd() (int, error) {
	rc, err := n.conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	err = rc.Control(func(s uintptr) { fd = int(s) })
	return fd, err
}
