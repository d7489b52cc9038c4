//go:build !unix

package sdnotify

import "time"

// Barrier does nothing where no service manager speaks sd_notify.
func (s *Sender) Barrier(timeout time.Duration) error { return nil }
