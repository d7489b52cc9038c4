package tcpgrace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

func controlSupported() error { return nil }

// tightenControlMode makes the file of the control socket registered as
// name 0600 if it is not, and if it still is the file this service bound
// (its device and inode as the hand-off carries them): a generation of an
// earlier release gave it Options.UnixMode, and an upgrade keeps the
// file, so without this the fix would wait for a cold start.
func (u *Upgrader) tightenControlMode(name string) {
	u.mu.Lock()
	s := u.sockets[name]
	u.mu.Unlock()
	if s == nil || s.unix == nil {
		return
	}
	var st unix.Stat_t
	if unix.Lstat(s.unix.Path, &st) != nil || (sockfd.FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}) != s.unix.ID ||
		st.Mode&0o7777 == controlMode {
		return
	}
	if err := os.Chmod(s.unix.Path, controlMode); err != nil {
		u.log.Warn("control socket: cannot make it 0600", "path", s.unix.Path, "err", err)
		return
	}
	u.log.Info("control socket: made 0600", "path", s.unix.Path, "was", fmt.Sprintf("%#o", st.Mode&0o7777))
}

// statusChannelName is where generation pid of the service whose control
// socket is path answers status: an abstract Unix socket (no file to
// leave behind; gone with the process), named after a hash of the path
// and the pid. Anyone in the network namespace could bind such a name
// first: the asking side checks with SO_PEERCRED that pid itself answers,
// and the answering side lets only root and its own uid ask.
func statusChannelName(path string, pid int) string {
	h := fnv.New64a()
	h.Write([]byte(path))
	return fmt.Sprintf("@tcpgrace-status-%016x-%d", h.Sum64(), pid)
}

// listenStatusChannel binds this generation's status channel.
func listenStatusChannel(path string, pid int) (net.Listener, error) {
	name := statusChannelName(path, pid)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("tcpgrace: control: status channel %s: %w", name, err)
	}
	return ln, nil
}

// statusOf asks generation pid for its status on its status channel.
func statusOf(path string, pid int, timeout time.Duration) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", statusChannelName(path, pid))
	if err != nil {
		return nil, fmt.Errorf("no status channel: %w", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if got, _, err := control.PeerCred(c); err != nil || got != pid {
		return nil, fmt.Errorf("its status channel is held by pid %d, not by it (%v)", got, err)
	}
	line, _ := json.Marshal(control.Request{V: control.Version, Cmd: control.CmdStatus})
	if _, err := c.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("asking its status channel: %w", err)
	}
	rep, err := control.ReadReply(c)
	switch {
	case err != nil:
		return nil, err
	case !rep.OK:
		return nil, errors.New(rep.Error)
	case rep.Status == nil:
		return nil, errors.New("a status reply without a status")
	}
	return rep.Status, nil
}
