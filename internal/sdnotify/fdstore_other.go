//go:build !unix

package sdnotify

// sendFDs does nothing where no service manager speaks sd_notify: there
// is no fd store to send to.
func (s *Sender) sendFDs(msg []byte, fds []int, what string) error { return nil }
