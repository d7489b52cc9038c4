//go:build unix

package bind

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// Stat is the socket file at path as it is now; nil for an abstract
// socket ('@') or where no socket file is.
func Stat(path string) *File {
	if len(path) == 0 || path[0] == '@' {
		return nil
	}
	id, ok := sockfd.SocketFile(path)
	if !ok {
		return nil
	}
	return &File{Path: path, ID: id}
}

// Remove removes the file at f.Path if it is still f's inode, and
// reports whether it did.
func (f *File) Remove() bool {
	if g := Stat(f.Path); g != nil && *g == *f {
		return os.Remove(f.Path) == nil
	}
	return false
}

// staleDialTimeout bounds the probe that tells a stale socket file from a
// live one.
const staleDialTimeout = time.Second

// listenUnix binds a Unix stream socket at path, gives the file mode before
// listen(2) (so nobody can connect while it has another mode), and
// replaces a stale socket file. A path starting with '@' is an abstract
// socket (Linux): no file, no mode.
func listenUnix(path string, mode fs.FileMode) (*net.UnixListener, *File, error) {
	if err := clearStale(path); err != nil {
		return nil, nil, err
	}
	fd, err := socketCloexec()
	if err != nil {
		return nil, nil, fmt.Errorf("socket for %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	sa := &unix.SockaddrUnix{Name: path}
	if path[0] == '@' {
		sa.Name = "\x00" + path[1:]
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, nil, fmt.Errorf("bind %s: %w", path, err)
	}
	p := Stat(path)
	ln, err := listenFile(f, fd, p, mode)
	if err != nil {
		if p != nil {
			p.Remove()
		}
		return nil, nil, err
	}
	return ln, p, nil
}

// listenFile gives the bound socket file p (nil: none) mode, then
// listens on the socket fd (f, named by its path) and makes it a
// listener.
func listenFile(f *os.File, fd int, p *File, mode fs.FileMode) (*net.UnixListener, error) {
	if p != nil {
		if err := os.Chmod(p.Path, mode); err != nil {
			return nil, fmt.Errorf("chmod %s: %w", p.Path, err)
		}
	}
	if err := unix.Listen(fd, listenBacklog()); err != nil {
		return nil, fmt.Errorf("listen %s: %w", f.Name(), err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener for %s: %w", f.Name(), err)
	}
	return ln.(*net.UnixListener), nil
}

// socketCloexec makes a non-blocking, close-on-exec Unix stream socket.
// The fork lock keeps a concurrent exec from inheriting it before
// close-on-exec is set, where SOCK_CLOEXEC does not exist.
func socketCloexec() (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// clearStale removes a socket file nobody listens on. A live one is
// EADDRINUSE; a file that is not a socket is left alone and reported.
func clearStale(path string) error {
	if path == "" {
		return errors.New("empty unix socket path")
	}
	if path[0] == '@' {
		return nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, staleDialTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: a live server listens there: %w", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// listenBacklog is the backlog Go's own listeners use: the kernel's
// somaxconn, which listen(2) caps it to anyway.
func listenBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	n := 0
	if err == nil {
		fmt.Sscanf(string(b), "%d", &n)
	}
	if n <= 0 {
		n = unix.SOMAXCONN
	}
	return n
}
