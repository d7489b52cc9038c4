// Package tcpgrace replaces a running server with a new process started
// from the executable on disk, handing over every listening socket, so that
// no connection is refused, reset or lost and requests in flight finish.
//
// # Processes
//
// A service is a sequence of generations. At any time at most
// [Options.MaxGenerations] processes of it are alive, and at most one of
// them is starting.
//
// Generation 1 starts cold, or from systemd socket activation. It
// registers its sockets by name with [Upgrader.Listen] and
// [Upgrader.ListenPacket], then calls [Upgrader.Ready]. [Upgrader.Upgrade]
// starts generation 2 from [Options.Executable] with the same arguments.
// Generation 2 gets a duplicate of every registered socket. It calls
// [New], asks for the same names, gets the inherited sockets, and calls
// Ready. Only then does generation 1 close its copies of the sockets and
// see [Upgrader.Exit] closed. It finishes the connections it already
// accepted with [Upgrader.Shutdown], and exits. The kernel socket is never
// closed while a generation holds it. During the overlap both generations
// accept from the same queue, so nothing queued is lost.
//
// Generation 2 may fail to start: its executable is missing or broken, it
// exits, it reports failure with [Upgrader.Fail], or it is not ready
// within [Options.ReadyTimeout]. Upgrade then kills and reaps it and
// returns an error. Generation 1 never stopped serving and may try again.
// With [Options.ReadyGrace], generation 1 also watches generation 2 for a
// while after it said ready, and serves again if it crashes meanwhile.
// An exit on purpose is no crash: generation 2 handed over to a
// generation 3, or was stopped.
//
// Generation 1 may die while generation 2 starts, killed by the OOM
// killer, a handler's panic or kill -9. Generation 2 then still takes the
// sockets it was handed and serves them alone. Connections queued
// meanwhile wait in the kernel and are served. Nothing serves only if
// generation 1 died before it started generation 2, and no supervisor
// restarts it.
//
// Each generation is in one state at a time: starting until Ready,
// serving, upgrading while a next generation starts, handed off once that
// one serves, closed after Shutdown or Close. Listen works until the
// upgrade begins. Upgrade works only while serving. Each method that is
// refused says why: [ErrNotReady], [ErrUpgradeInProgress], [ErrUpgraded]
// or [ErrClosed].
//
// # Deploys
//
// Upgrade runs the file at the path the process was started from, as
// nginx re-execs its argv[0]. That path is argv[0] made absolute at [New],
// or found in PATH, and it is looked up anew at each upgrade. A new binary
// renamed over the old path runs. So does the release that a symlink on
// the path points to now, such as "current -> releases/v2". The upgrade's
// log line names the file that runs. [Options.Executable] sets another
// path.
//
// A name's address is part of the hand-off. A next generation that asks
// for an inherited name with another address fails to start with
// [ErrNameConflict], and the old one keeps serving. To move a port, give
// the new address a new name. The old socket, unclaimed, is closed at
// Ready.
//
// The PID file is replaced atomically: a temp file is renamed over it.
// A directory the service may not write, such as a root-owned /run with a
// pid file made for the service's user, is the exception. There the file
// is written in place, which is not atomic, and emptied rather than
// removed at the end.
//
// A process that is PID 1 of a PID namespace, such as a container's
// entrypoint, cannot hand over: its exit ends the namespace and kills the
// next generation. Upgrade refuses there with [ErrPID1]. Run the server
// under an init that stays, such as docker run --init or tini, or under
// the tcpgrace run supervisor.
//
// # Hand-off protocol
//
// The next generation gets the sockets as inherited fds, a readiness pipe,
// and one environment variable, TCPGRACE_FDS, that names each socket and
// the pipe; it says on the pipe when it is ready, when it gave up and why,
// and later when it leaves on purpose. The format is versioned ("v1"), and
// decoding is strict: a value that does not check out fails the start, and
// the serving generation serves on. A stale copy of the variable inherited
// by a grandchild is ignored. A Unix socket file is removed only while
// its path still leads to the file its socket was bound to. The fds, the
// variable's encoding, the pipe's bytes and the checks are described in
// docs/PROTOCOL.md of the repository and in package internal/wire.
//
// # Draining
//
// A generation leaves in three steps.
//
// It stops accepting. After a successful upgrade its listeners are
// closed, never shut down with shutdown(2), which would stop every
// generation. On Shutdown they are closed and released.
//
// It tells its handlers. [Upgrader.Exit] is closed, and [Server] cancels
// the context its [Handler]s get. A protocol with a clean way to end a
// connection can use it between messages: HTTP's keep-alive close, gRPC's
// GOAWAY, a goodbye message.
//
// It hands over what can move. After an upgrade, connections move to the
// next generation over the hand-off channel, a socket pair between the
// two: [Server.RunHTTP] gives its idle HTTP/1.x connections once their
// requests in flight are done, a [Handler] gives its connection at a
// message boundary with [Handover] (the next generation's handler gets it
// with [Resumed]). A connection leaves only once the next generation
// acknowledged it; if it refuses or dies, this generation keeps it and
// drains it. [Options.DrainOnly] keeps every connection where it is. When
// the drain is over, [Options.State] goes to the next generation
// ([Upgrader.Inherited]).
//
// It waits. [Upgrader.Shutdown] waits until every connection accepted
// through the registry's listeners is closed. At its context's deadline
// it closes the rest, and [Upgrader.Stats] counts them. Connections
// already accepted are out of the kernel's queue, and no other generation
// can serve them, so they are never cut before the deadline. A line
// protocol has no clean way to end a connection, so it is served until
// the client closes.
//
// While it drains, a generation that handed over reports its open
// connections, and at the end how many finished and how many were cut,
// to the serving generation through the service's mailbox (a socket pair
// every generation inherits), so that they are counted after it is gone.
//
// Several generations may drain at once: a generation can upgrade while
// its parent still drains long connections. [Options.MaxGenerations]
// bounds the generations alive, serving and draining together. Past it,
// Upgrade fails with [ErrTooManyGenerations].
//
// # Observing
//
// [Options.OnEvent] receives each lifecycle event as an [Event]: an upgrade
// requested (by which signal, or the control socket), refused, started
// (the child's pid), the next generation ready (the hand-off's duration),
// upgraded or failed, a reload and its error, a stop and its reason, a
// drain begun and ended, an older generation's drain reported. Events come
// one at a time, in order, never from the accept path.
//
// [Upgrader.Status] returns what the control socket's status shows:
// generation, state, listeners with their bound addresses, open
// connections, the older generations still draining with the connections
// each has left, and the service's [Totals]. The totals count since the
// first generation started: each generation hands them to the next, and
// a draining one reports how its drain ended. The module
// github.com/tcpgrace/tcpgrace/tcpgrace/metrics exports them to
// Prometheus.
//
// # Signals
//
// Nothing in this package registers a signal handler by itself. [Server]
// acts on signals only when given a channel, and [NotifySignals] makes one
// with the defaults. Register before calling [New]: a new generation can
// be signalled as soon as it runs, and before a handler exists Go ends
// the process on a SIGTERM, SIGINT or SIGHUP, and ignores a SIGUSR1.
//
//	signal          Server default                      nginx                   tableflip examples
//	SIGUSR1         upgrade: start the next generation  reopen log files        -
//	SIGUSR2         -                                   binary upgrade          -
//	SIGHUP          Server.Reload in place, if set      reload configuration    upgrade
//	SIGTERM, SIGINT stop accepting, drain, return       fast shutdown           -
//	SIGQUIT         -                                   graceful shutdown       -
//
// Each set is a field of [Server]: UpgradeSignals, StopSignals and
// ReloadSignals. So nginx's or tableflip's convention is one assignment
// away, plus its registration. A signal that is not registered keeps Go's
// default behaviour (os/signal, "Default behavior of signals in Go
// programs"): SIGHUP, SIGINT and SIGTERM end the process, SIGQUIT ends it
// with a stack dump, and SIGUSR1 and SIGUSR2 are ignored. So SIGUSR2 as
// the upgrade signal needs NotifySignals(syscall.SIGUSR2), or a SIGUSR2
// does nothing at all; Serve, Run and RunHTTP log a warning at start for
// an upgrade or stop signal their Signals channel will never deliver.
// NotifySignals loses no signal to a burst of another, and a stop always
// gets through.
//
// Without a reload hook SIGHUP is logged and ignored. The hook runs beside
// the accept loop, one run at a time. Reload signals during a run coalesce
// into one more run. A stop signal does not wait for the hook.
//
// A stop first accepts what already waits in the listeners' accept
// queues, then closes them. While [Server.Serve] drains, an upgrade
// signal is refused and logged with [ErrClosed]. A second stop signal
// closes the open connections at once. After an upgrade, the first stop
// signal counts as the first.
//
// [Server.Run] gives servers with their own accept loop, such as gRPC, the
// same signal handling and drain. [Server.RunHTTP] does it for net/http,
// with a drain that keeps answering kept-alive connections.
//
// # Control socket
//
// With [Options.Control] set, the serving generation answers requests on a
// Unix stream socket at that path from Ready on. So a deploy learns how
// its upgrade ended. The command in cmd/tcpgrace is its client.
//
// The socket is registered like any other, as "tcpgrace-control:" and the
// path. So every generation hands it to the next, and the path stays
// valid. Its file is 0600, whatever [Options.UnixMode] says (a file an
// earlier release left with another mode is made 0600). A stale file is
// replaced, and a live one makes New fail. Each connection is checked with
// SO_PEERCRED: only root and the server's own uid get an answer. It works
// on Linux only.
//
// Each connection carries one request and one reply, each a line of JSON
// (version 1 of the protocol; the lines, the limits and the error codes
// are in docs/PROTOCOL.md of the repository).
//
// upgrade runs [Upgrader.Upgrade] and replies when it is over. On success
// the reply names the new generation's pid and number, the old pid, and
// how long the upgrade took, ready grace included. On failure it carries
// the error, with the child's Fail text or exit status. timeout_ms, if
// given, cancels the upgrade after that long; above 24 h (86400000) the
// request is refused. While an upgrade runs, started by a request or a
// signal, another is refused at once with [ErrUpgradeInProgress]. So is
// one that reaches the new generation while its parent still watches it
// through [Options.ReadyGrace]: the upgrade to it is not over, and the
// grace is kept.
//
// status replies with the pid, the generation and its state: serving,
// upgrading, draining or stopping. It names the executable an upgrade
// starts, the file this process runs, and the time New ran. It lists
// every registered socket with its name, network and bound address, the
// open connections, and each older generation still draining with the
// connections it has left. Every reply that names pids (upgrade, status,
// stop) also names the pid namespace they are in, as pid_ns
// ("pid:[4026531836]"): pids of a server in a container mean nothing
// outside it, and the command says so when the namespace is not its own.
//
// stop asks the [Server] loop to drain as a stop signal does, and replies
// once draining has begun. Without a Server it is refused. An upgrade
// asked for while the generation stops is refused too. A stop stops the
// service, not one process: if it reaches the old generation while the
// new one is in its ready grace, the grace ends, the hand-off stands, and
// the old generation hands the stop on to the new one over the control
// socket; the reply is the new generation's. (A stop signal, sent to one
// pid, still stops only that process.)
//
// An upgrade or a stop whose client closed its connection before the
// server read the request (the server was stopped or hung meanwhile, and
// the client gave up) is not carried out: the server checks the
// connection (POLLHUP) just before it acts, and logs the refusal. Serve's drain
// closes the control socket with the other listeners and removes its
// file. Run's drain keeps answering until the server has stopped.
//
// A generation that handed over no longer accepts on the control socket.
// Until its drain is over, it answers status on a status channel of its
// own (an abstract Unix socket, gone with the process), and nothing
// else; the serving generation asks each older one there and reports
// them in its own status. A request that reached a generation just
// before it handed over is answered by that generation: status says
// draining, and upgrade and stop fail with [ErrUpgraded], to be asked
// again.
//
// # Platforms
//
// Linux is the platform: it is what the tests run on. The package also
// builds on other Unix systems (macOS and FreeBSD are vetted), where the
// hand-off works but the control socket does not: it checks each client
// with SO_PEERCRED, which is Linux's, so New fails with [ErrNotSupported]
// when [Options.Control] is set. The package does not build for Windows:
// the build stops on the undefined name
// tcpgrace_supports_linux_and_unix_only, which says why. Go 1.25 is the
// oldest release it supports.
//
// # systemd
//
// When NOTIFY_SOCKET is set, each generation speaks sd_notify(3). So the
// unit can be Type=notify, with the default NotifyAccess=main and no PID
// file. What the service tells systemd:
//   - READY=1 from the first generation at [Upgrader.Ready];
//   - RELOADING=1 with MONOTONIC_USEC= when an upgrade starts;
//   - MAINPID=<next> and READY=1 from the old main process once the next
//     generation is ready;
//   - READY=1 and the reason in STATUS= after a failed upgrade;
//   - STOPPING=1 when the main process begins its final drain;
//   - STATUS= for each step, such as "serving, generation 3" or
//     "draining 12 connections, generation 3";
//   - EXTEND_TIMEOUT_USEC= while an upgrade or a drain still runs, which
//     keeps systemd's timeout ahead of it;
//   - WATCHDOG=1 at half the interval of WatchdogSec=, from the serving
//     generation;
//   - FDSTORE=1 with FDNAME= (the registry name, %XX-escaped) for each TCP
//     and UDP socket the serving generation bound, at Ready; FDSTOREREMOVE=1
//     for an inherited one it closed as unclaimed; and, as it stops after
//     Shutdown, its [Options.State] in a memfd named tcpgrace-state. Under a
//     unit with FileDescriptorStoreMax=, `systemctl restart` and a crash
//     under Restart= then refuse no connection: the next start claims the
//     stored sockets by name, and a restart's reads the state with
//     [Upgrader.Inherited]. [Options.DisableFDStore] sends none of these.
//
// [New] removes NOTIFY_SOCKET and the watchdog variables from the
// environment, so processes the program spawns cannot speak for it. Only
// the next generation gets them back. Without NOTIFY_SOCKET nothing is
// sent.
//
// A message never waits: one that finds the manager's queue full (a
// manager that reads nothing) is dropped, and a warning is logged at most
// every 10 s with how many were lost, so a stalled manager holds up
// neither serving, nor an upgrade, nor a stop. A WATCHDOG_USEC below 1 ms
// or beyond the longest [time.Duration] (about 292 years) is ignored with
// a warning that names it: no pings, and the next generation does not get
// it.
//
//	[Service]
//	Type=notify
//	ExecStart=/usr/local/bin/lineserver -tcp :8080 -drain-timeout 30s
//	ExecReload=/bin/kill -USR1 $MAINPID
//	ExecStop=-/bin/kill -TERM $MAINPID
//	ExecStop=-/usr/bin/tail --pid=${MAINPID} -s 0.1 -f /dev/null
//	KillMode=control-group
//	TimeoutStopSec=45s
//
// The ExecStop= lines matter. Every generation after the first is not
// systemd's child, and systemd 252 does not wait for such a main process
// on stop. With nothing else left in the unit, it sends SIGKILL right
// after SIGTERM. Stopped by ExecStop=, the main process drains first.
// Then systemd sends SIGTERM to older generations still draining and
// waits for them. Those are not the main process and cannot extend the
// stop timeout, so TimeoutStopSec should exceed the drain timeout.
//
// Socket activation through LISTEN_FDS and LISTEN_FDNAMES is honoured.
// The sockets are claimed by name or address and handed on at every
// upgrade. The socket unit keeps its own copies when the service stops.
// A Type=simple unit also works if it sets PIDFile= and the server writes
// it with [Options.PIDFile]. examples/systemd has units to copy, and the
// end-to-end tests run them under a real systemd.
package tcpgrace
