//go:build unix

package sdnotify

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// sendFDs sends msg with fds (SCM_RIGHTS) without waiting; what names the
// kind of message in the error. A failed send is counted as lost.
func (s *Sender) sendFDs(msg []byte, fds []int, what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.sendFDsLocked(msg, fds)
	if err != nil {
		s.lost++
		return fmt.Errorf("sd_notify %s to %s (message dropped): %w", what, s.addr.Name, err)
	}
	return nil
}

func (s *Sender) sendFDsLocked(msg []byte, fds []int) error {
	if err := s.openLocked(); err != nil {
		return err
	}
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	sa := &unix.SockaddrUnix{Name: s.addr.Name} // a leading '@' names an abstract socket
	var sendErr error
	err = raw.Write(func(sock uintptr) bool {
		sendErr = unix.Sendmsg(int(sock), msg, unix.UnixRights(fds...), sa, unix.MSG_DONTWAIT)
		return true // one attempt: never wait for room
	})
	if err == nil {
		err = sendErr
	}
	return err
}
