// Package tcpgrace replaces a running server with a new process started
// from the executable on disk, handing over every listening socket, so that
// no connection is refused, reset or lost and requests in flight finish.
//
// # Processes
//
// A service is a sequence of generations. Generation 1 starts cold (or from
// systemd socket activation), registers its sockets by name with
// [Upgrader.Listen] and [Upgrader.ListenPacket], and calls
// [Upgrader.Ready]. On [Upgrader.Upgrade] it starts generation 2 from
// [Options.Executable] with the same arguments and passes it a duplicate of
// every registered socket. Generation 2 calls [New], asks for the same
// names (and gets the inherited sockets), and calls Ready. Only then does
// generation 1 close its copies of the sockets and see [Upgrader.Exit]
// closed; it finishes the connections it already accepted
// ([Upgrader.Shutdown]) and exits. The kernel socket is never closed while
// a generation holds it, and during the overlap both generations accept
// from the same queue, so nothing queued is lost.
//
// If generation 2 fails to start (missing or broken executable, exits,
// reports failure with [Upgrader.Fail], or is not ready within
// [Options.ReadyTimeout]), Upgrade kills and reaps it and returns an error;
// generation 1 never stopped serving and may try again.
//
// # Hand-off protocol
//
// The child receives the sockets as fds 4 and up and the write end of a
// readiness pipe as fd 3, described by one environment variable,
// TCPGRACE_FDS (see package [github.com/tcpgrace/tcpgrace/inherit] for the
// format). The variable names the parent's pid; a process whose parent is
// someone else ignores it. The child sends one byte on the pipe when ready,
// or a failure text. Sockets are duplicated with F_DUPFD_CLOEXEC through
// SyscallConn, never with (*net.TCPListener).File, which would switch the
// shared socket to blocking mode. Closing a listener never calls
// shutdown(2), which would stop every generation.
//
// # Signals
//
// This package registers no signal handler. By convention (and in the
// example servers) SIGUSR1 calls Upgrade, SIGHUP reloads configuration in
// place where the program supports it, and SIGTERM or SIGINT call
// Shutdown. Register with signal.Notify before calling New: Go kills a
// process on SIGTERM that arrives earlier.
//
// # Platforms
//
// Linux and other Unix systems. Elsewhere hand-off fails with
// [ErrNotSupported].
//
// # systemd
//
// A unit that starts the server with Type=simple works as long as the old
// generation is allowed to exit: use a PID file so systemd follows the
// serving process.
//
//	[Service]
//	ExecStart=/usr/local/bin/lineserver -tcp :8080 -pidfile /run/lineserver.pid
//	PIDFile=/run/lineserver.pid
//	ExecReload=/bin/kill -USR1 $MAINPID
//
// Socket activation (LISTEN_FDS) is honoured on the first start.
package tcpgrace
