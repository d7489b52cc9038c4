//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
)

// manager speaks sd_notify(3) to a service manager above the supervisor,
// if there is one: READY=1 with MAINPID= of the supervisor itself (it is
// the stable pid) once the first instance is ready, STATUS= as instances
// come and go, STOPPING=1, and WATCHDOG=1 while the loop runs. The
// library's Upgrader would speak for a generation's life; the
// supervisor's life is another one, so it takes the variables before the
// library can and speaks for itself. A nil Sender sends nothing. A
// message never waits: the supervisor's loop must not stall behind a
// manager that reads nothing.
type manager struct {
	*sdnotify.Sender               // nil: no service manager above
	watchdog         time.Duration // 0: no watchdog pings
	ready            bool          // READY=1 was sent (by this image or an earlier one)
}

// takeManager reads the variables and removes them from the environment;
// a WATCHDOG_USEC it ignores is logged to log.
func takeManager(log *slog.Logger) *manager {
	e := sdnotify.Take()
	if e.Err != nil {
		log.Warn("sd_notify", "err", fmt.Errorf("tcpgrace run: %w", e.Err))
	}
	return &manager{Sender: sdnotify.NewSender(e.Socket), watchdog: e.Watchdog}
}
