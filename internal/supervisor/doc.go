// Package supervisor is `tcpgrace run`: a process with a stable pid that
// holds the listening sockets and runs instances of a command over them,
// replacing one instance with the next without refusing a connection. The
// command can be written in any language: it needs no tcpgrace code, only
// systemd's two small protocols, socket activation and sd_notify.
//
// # Processes
//
// The supervisor binds every -listen socket with the shared socket layer
// (internal/bind: a stale Unix socket file is replaced, a live one
// refused; a systemd socket activation of the supervisor itself is
// honoured through internal/wire, matched by name, then address), keeps a
// raw copy of each, and never
// accepts on them: it only holds them, so that the sockets and their
// accept queues live while instances come and go. An instance is one run
// of the command, a child of the supervisor leading a session and a
// process group of its own. At most one instance serves; during an
// upgrade a second one starts beside it; instances told to stop drain
// until they exit.
//
// Whatever an instance started is stopped with it. Its processes are its
// descendants and the orphans among them re-parented to the supervisor;
// no cgroup being at hand in general, a census of /proc, taken whenever a
// child is reaped, an instance becomes ready or names a MAINPID=, tells
// which orphan came from which instance: by the ancestry an earlier
// census saw, by the session or process group it leads, or by LISTEN_PID
// in the environment the orphan was started with. When an instance's
// process (its main one, with MAINPID=) ends, what is left of it gets
// SIGKILL if it never became ready or was killed, and otherwise SIGTERM,
// then SIGKILL after Config.StopTimeout; a replaced instance's processes
// are left to drain until its main process exits. An orphan none of these
// place (it left the session, the environment and its parent before any
// census saw it) is stopped when the supervisor stops, which exits only
// once nothing of any instance runs. A self-upgrade hands the ended
// instances and the last census on, so the new image goes on stopping
// what they left.
//
// # The instance's side
//
// Each instance gets the sockets as fds 3 onwards, in -listen order, with
// LISTEN_FDS, LISTEN_FDNAMES (the -listen names) and LISTEN_PID set to its
// own pid, as sd_listen_fds(3) requires. Nothing but the child itself can
// set a variable after the fork, so the supervisor starts its own binary
// in a hidden mode ([ExecApp]) that sets LISTEN_PID and execs the command
// in the same process (a few ms; see bench/RESULTS.md). A Go program
// using this module's inherit package, through tcpgrace.New, takes the
// sockets unchanged (matched by name, then address). The file status
// flags (O_NONBLOCK) belong to a socket, which every instance shares, as
// under systemd: each instance sets the mode it needs.
//
// NOTIFY_SOCKET is a datagram socket of the supervisor in a private
// directory (mode 0700), $TMPDIR/tcpgrace-run-*, which also holds a lock
// file that the supervisor keeps flock(2)ed all its life (across its
// self-upgrades too). A supervisor killed outright cannot remove its
// directory; the next one of the same user to start removes every such
// directory whose lock is free, and never one whose lock is held,
// whatever PID namespace its supervisor runs in. SO_PASSCRED makes the
// kernel attach the sender's pid to every message, and only messages
// from an instance's main process count. READY=1 makes a starting instance ready; STATUS= is logged and
// passed on; STOPPING=1 from the serving instance, unasked, starts its
// replacement at once; MAINPID= names another main process (a process
// of the same instance, as when a Go instance upgrades itself with the
// library; one of another instance is refused), whose death a pidfd
// shows even when its own parent reaps it (the instance has then ended,
// with an unknown status). What a process sent before it exited is
// handled before its exit (the socket is read dry before a reap), as
// systemd does: a main process that names its successor and exits at
// once is followed, not taken for dead. A READY=1 from an instance whose
// start failed is ignored. Other messages are ignored; fds sent with
// FDSTORE=1 are closed. A command that cannot notify is ready once it has run for
// Config.ReadyDelay.
//
// # Upgrades
//
// SIGUSR1, or [Supervisor.Upgrade] (for a control socket), starts a new
// instance of the command, looked up anew in PATH or at its path so that
// a release renamed over it runs. Once it is ready the one serving until
// then gets SIGTERM and drains; after Config.StopTimeout its process
// group is killed. A new instance that cannot start, exits, or is not
// ready within Config.ReadyTimeout (its MAINPID= included) is killed with
// every process of it, and the serving one serves on; the reason is
// logged, kept as the last failure and returned by Upgrade. At most
// Config.MaxInstances are alive at once, draining ones included.
//
// With Config.Control (-control PATH) the supervisor answers the control
// protocol of package internal/control on a Unix socket (mode 0600; root
// and its own uid only, by SO_PEERCRED): "tcpgrace upgrade -control PATH"
// runs Upgrade and exits with its outcome (its -timeout cancels the start
// and kills the new instance), "tcpgrace status" shows the supervisor as
// the process that answers, the serving instance's generation, the
// draining instances as older generations, and in its supervisor part
// every instance, the restarts and the last failure ([Supervisor.Status]);
// the instances' connections are theirs and unknown (-1). "tcpgrace stop"
// stops as SIGTERM does. "tcpgrace reload" forwards SIGHUP to the serving
// instance, as a SIGHUP to the supervisor does, and is answered once the
// signal was sent: the supervisor cannot know when the instance's reload
// is over. Refusals for now (an upgrade in progress, too many instances,
// no instance serving yet, stopping) carry the code "refused", other
// failures "failed". The socket is not handed to the instances.
//
// When the serving instance dies unasked, the sockets stay open (clients
// wait in the accept queues) and a new instance starts at once; after
// deaths in a row (an instance that served less than 10 s) the restart
// waits 100 ms, doubling up to 10 s. Restarts, the crash count and the
// last failure are logged and in [Supervisor.Status]. Until an instance
// has been ready once, though, the deaths are failed starts of a command
// that may never work (a missing file, a broken configuration): after
// Config.StartLimit of them in a row (-start-limit, default 5) the
// supervisor gives up as systemd's start limit does: it logs the last
// failure, stops, and Run returns 1. Once an instance has been ready the
// limit no longer applies.
//
// # PID 1
//
// The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER) and, as PID
// 1 of a container, init: orphans of the instances are re-parented to it.
// One loop owns every wait: on SIGCHLD it calls wait4(-1) until no child
// is left to reap, instances and orphans alike, so no zombie stays and no
// other wait races it (nothing here uses exec.Cmd.Wait). SIGTERM and
// SIGINT are forwarded to every instance; the supervisor exits when all
// are gone, and every process they left (see Processes), with the status
// of the instance that served (128+N if signal N killed it). No instance
// starts after a stop, so the stop closes the supervisor's copies of the
// sockets and removes the Unix socket files it bound at once: when the
// draining instances have closed theirs too, a new client is refused (or
// finds no file) instead of waiting in an accept queue until the exit
// resets it. SIGHUP is forwarded to the serving instance. Under a service
// manager (NOTIFY_SOCKET set for the supervisor) it says READY=1 with
// MAINPID= of its own stable pid once the first instance is ready,
// STATUS= as instances come and go, STOPPING=1, and WATCHDOG=1. A message
// never waits (one that finds the manager's queue full is dropped, with a
// warning at most every 10 s), so a stalled manager never stalls the loop;
// a WATCHDOG_USEC below 1 ms or beyond the longest time.Duration is
// ignored with a warning.
//
// # Upgrading the supervisor
//
// SIGUSR2 replaces the supervisor's own program. The library's hand-off
// would start a new supervisor as a new process; that is unsound here: the
// instances are the old supervisor's children, which the new one could
// neither wait for nor get the exit status of, the pid that a container
// runtime or a pid file watches would change, and as PID 1 the old one's
// exit would end the namespace, instances included. So, as HAProxy's
// master does, the supervisor re-execs itself in place: the same pid,
// still PID 1 and still the parent of its instances. It clears
// close-on-exec on the sockets, the notify socket, the control and the
// metrics socket and passes their fds,
// the instances and its counters in TCPGRACE_RUN_STATE (versioned JSON);
// the new image adopts the fds as they are. (It cannot hand them over as
// LISTEN_FDS: that needs them at fds 3 onwards, and a
// running Go program cannot move fds there without closing the runtime's
// own: the Go 1.26 runtime holds its cgroup CPU-limit files open, at fds
// 3 and 4 on a machine measured.)
// Before the exec, the new binary runs as a child with the state and
// TCPGRACE_RUN_CHECK=1: only if it parses the command line and the state
// and exits 0 does the exec happen, so that a broken build leaves the
// running supervisor in place. The exec takes a few ms, during which the
// instances serve on; children that exit meanwhile are reaped by the new
// image, and notify messages and control requests not yet accepted wait
// in their sockets. Control requests accepted before the exec are
// answered first (for at most 3 s), and those that arrive while the check
// runs are carried out at once. The self-upgrade is refused while an
// instance starts, while none serves and while stopping (a start's
// deadlines and waiters do not cross the exec), so an upgrade or a stop
// requested during it cancels it.
//
// While the check runs (up to 10 s) the supervisor still reads its
// signals: SIGHUP is forwarded to the serving instance at once; SIGTERM
// or SIGINT kills the check's process group, cancels the self-upgrade and
// stops the supervisor (a stop wins); SIGUSR1 is carried across the exec
// in the state, and the new image starts the upgrade once it runs (or
// this one does, if the self-upgrade fails); another SIGUSR2 is the
// self-upgrade under way. The supervisor looks at its signals once more
// right before the exec. Two windows remain that no process can close
// from Go: a signal that arrives in the few µs between that last look and
// the exec is lost; and a SIGTERM, SIGINT or SIGHUP in the first moment
// of the new image, before the Go runtime has handed signals to the
// supervisor (cmd/tcpgrace registers them before main; the window is the
// runtime's start, about a millisecond), ends the supervisor as an
// unhandled signal would.
//
// # Events and metrics
//
// The loop emits the lifecycle events of its instances on the shared
// event stream (package internal/event) where it logs them: an upgrade
// requested, refused, started and ended (ok or failed), an instance
// started, ready, draining, exited or crashed, a restart, the stop (see
// events.go for the fields). The metrics subscribe: they count the
// upgrades, refusals, hand-off times, crashes and restarts, and read the
// serving generation and the instances by phase as each event leaves
// them. With Config.Metrics (-metrics HOST:PORT) an HTTP server of its
// own answers GET /metrics in Prometheus' text format (internal/promtext),
// never waiting for the loop. The counters count since the first image
// started: a self-upgrade passes them on in TCPGRACE_RUN_STATE with the
// metrics socket, which it pauses for the exec (scrapes not yet accepted
// wait in its queue for the next image); like the control socket, it is
// never handed to an instance.
//
// # Platforms
//
// Linux only: elsewhere [New] fails with ErrNotSupported.
package supervisor
