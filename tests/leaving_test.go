package tests

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// ownRoles are the roles of playRole that build their own Upgrader:
//
//	serve-exit3  serves lineserver's -tcp and -unix listeners like
//	             lineserver (SIGUSR1 upgrades to the file it was started
//	             from, handing over at once; SIGTERM drains), and once
//	             its Serve has returned exits with status 3, as a main
//	             that log.Fatal's a drain error does
var ownRoles = map[string]func() int{
	"serve-exit3": playServeExit3,
}

func playServeExit3() int {
	sigs := tcpgrace.NotifySignals()
	args := lineserverArgs(os.Args[1:])
	u, err := tcpgrace.New(tcpgrace.Options{PIDFile: args["-pidfile"][0], Executable: os.Args[0],
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "role:", err)
		return 1
	}
	var lns []net.Listener
	for _, network := range []string{"tcp", "unix"} {
		for _, addr := range args["-"+network] {
			ln, err := u.Listen(network+":"+addr, network, addr)
			if err != nil {
				u.Fail(err)
				return 1
			}
			lns = append(lns, ln)
		}
	}
	if err := u.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "role: ready:", err)
		return 1
	}
	srv := &tcpgrace.Server{Upgrader: u, Handler: echoLines, Signals: sigs, DrainTimeout: 5 * time.Second}
	err = srv.Serve(context.Background(), lns...)
	fmt.Fprintf(os.Stderr, "role: served (%v), exiting 3 on purpose\n", err)
	return 3
}

// TestNoRollbackAfterChildLeft pins issue #10's ReadyGrace bug: a next
// generation that said ready, then left on purpose (it was stopped, or
// handed over to a generation of its own) and exited non-zero (a
// log.Fatal on its drain error) made its parent, still within
// -ready-grace, roll back and serve again: beside a newer generation of
// other code, or without the Unix socket file and pid file the child's
// Shutdown had removed. A child that leaves tells its parent so first;
// only a crash of the serving generation rolls back.
func TestNoRollbackAfterChildLeft(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	self, err := os.Executable()
	require.NoError(t, err)
	for _, how := range []string{"stopped", "upgraded"} {
		t.Run(how, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			s := startServer(t, []string{roleEnv + "=serve-exit3"}, "-tcp", "127.0.0.1:0", "-unix", sock, "-ready-grace", "5s")
			tcp := s.addr("tcp:127.0.0.1:0")
			first := s.pid()
			s.deploy(self)
			child := s.startUpgrade() // the role serves; the first generation watches it for 5 s
			require.NoError(t, echoOnce("unix", sock, "child"), "the child serves")
			var next int
			if how == "stopped" {
				require.NoError(t, syscall.Kill(child, syscall.SIGTERM))
			} else {
				next = s.startUpgrade() // lineserver again, started by the child, which then exits 3
			}
			outcome := s.upgradeOutcome(first)
			require.Contains(t, outcome, `msg="upgrade done`, "the first generation's hand-off stands: its child left on purpose")
			s.waitExit(first, 0)
			waitFor(t, "the child to be gone", func() bool { return processAlive(child) != nil })
			if how == "stopped" {
				for _, path := range []string{sock, s.pidFile} {
					_, err := os.Lstat(path)
					assert.ErrorIs(t, err, fs.ErrNotExist, "the stopped child removed %s, and nobody serves without it", path)
				}
				return
			}
			assert.Equal(t, next, s.pid(), "the pid file names the newest generation")
			assert.NoError(t, echoOnce("tcp", tcp, "newest"), "the newest generation serves TCP")
			assert.NoError(t, echoOnce("unix", sock, "newest"), "the newest generation serves the Unix socket")
		})
	}
}

// upgradeOutcome waits for generation pid's upgrade to succeed or fail and
// returns the log line that says which.
func (s *server) upgradeOutcome(pid int) string {
	s.t.Helper()
	done := fmt.Sprintf(`msg="upgrade done: next generation serves" pid=%d `, pid)
	failed := fmt.Sprintf(`msg="upgrade failed" pid=%d `, pid)
	var line string
	waitFor(s.t, fmt.Sprintf("the outcome of generation %d's upgrade\nlogs:\n%s", pid, s.logs), func() bool {
		for _, l := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(l, done) || strings.Contains(l, failed) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}
