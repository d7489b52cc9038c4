package tcpgrace

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
)

// sdExtendStep is how far ahead each EXTEND_TIMEOUT_USEC pushes the
// service manager's timeout while an upgrade or a drain runs; it is sent
// every sdExtendStep/3, so one lost or late message costs nothing.
const sdExtendStep = 3 * time.Second

// sdNotifier is the service manager as one Upgrader speaks to it (see
// package sdnotify for the protocol). [New] takes the manager's variables
// out of the environment, so that processes the program spawns do not
// speak for it; each next generation gets them back. A nil *sdNotifier,
// or one without a socket, sends nothing: a process not started by a
// service manager behaves exactly as before.
type sdNotifier struct {
	sender   *sdnotify.Sender // nil: no service manager listens
	env      []string         // the variables handed to the next generation
	watchdog time.Duration    // 0: no watchdog for this process
	envErr   error            // a variable ignored as malformed, for New to log
}

// sdTakeOnce guards the process environment's service manager
// variables: they are consumed by the first Upgrader.
var sdTakeOnce sync.Once

// takeNotify reads the service manager's variables from the process
// environment and removes them from it; only the first call in a process
// gets them.
func takeNotify() *sdNotifier {
	n := &sdNotifier{}
	sdTakeOnce.Do(func() { n = newNotifier(sdnotify.Take()) })
	return n
}

// newNotifier speaks to the manager e names.
func newNotifier(e sdnotify.Env) *sdNotifier {
	n := &sdNotifier{sender: sdnotify.NewSender(e.Socket), env: e.Next, watchdog: e.Watchdog}
	if e.Err != nil {
		n.envErr = fmt.Errorf("tcpgrace: %w", e.Err)
	}
	return n
}

// enabled reports whether a service manager listens.
func (n *sdNotifier) enabled() bool { return n != nil && n.sender.Enabled() }

// childEnv is what the next generation needs to speak to the manager.
func (n *sdNotifier) childEnv() []string {
	if n == nil {
		return nil
	}
	return n.env
}

// notify sends lines without waiting, logging a failure to log (at most
// one warning every sdnotify.WarnEvery, with how many messages were
// lost).
func (n *sdNotifier) notify(log *slog.Logger, lines ...string) {
	if n != nil {
		n.sender.Notify(log, lines...)
	}
}
