//go:build !linux

package supervisor

import (
	"context"
	"errors"
	"os"
)

// ErrNotSupported is returned by New outside Linux: the supervisor needs
// PR_SET_CHILD_SUBREAPER, SCM_CREDENTIALS and /proc.
var ErrNotSupported = errors.New("tcpgrace run: supported on Linux only")

// ExecArg is the exec helper's hidden first argument (Linux only).
const ExecArg = "__exec-with-listen-pid"

// Supervisor is the Linux supervisor; elsewhere New fails.
type Supervisor struct{}

// New fails with ErrNotSupported.
func New(Config) (*Supervisor, error) { return nil, ErrNotSupported }

// Run returns 1.
func (*Supervisor) Run(<-chan os.Signal) int { return 1 }

// Upgrade fails with ErrNotSupported.
func (*Supervisor) Upgrade(context.Context) error { return ErrNotSupported }

// NotifySignals registers nothing and returns nil.
func NotifySignals() <-chan os.Signal { return nil }

// ExecApp fails with status 127.
func ExecApp([]string) int { return 127 }

// CheckRun reports no check run.
func CheckRun(Config) (bool, error) { return false, nil }
