// Package inherit is the child's side of tcpgrace's hand-off: it decodes
// the environment that names the sockets a process inherited, checks each
// fd, and hands the sockets out by name.
//
// # Wire format
//
// A tcpgrace parent starts its child with the sockets as extra files (fd 3
// onwards) and one variable, [EnvFDs]:
//
//	TCPGRACE_FDS=v1;pid=4242;gen=2;ready=3;fd=web,4,tcp,127.0.0.1%3A8080;fd=ctl,5,unix,%2Frun%2Fctl.sock
//
// pid is the parent's pid: a process honours the value only when it is
// its own parent's, so a grandchild that inherits a stale copy ignores it.
// gen is the generation of the reader. ready is the write end of a pipe on
// which the child sends [ReadyByte] once it serves, or [FailByte] and the
// reason when it gives up. Each fd entry is name, fd, network and address;
// name and address are query-escaped. Two optional fields may follow
// ready: older lists the pids of generations before the parent that still
// drain (so that a bound on live generations holds across them), and keep
// lists the Unix sockets whose files belong to systemd, which no
// generation may remove.
//
// Decoding is strict: every malformed part, a duplicate fd or name, and an
// fd that is closed, not a socket, not listening or of the wrong family is
// a [*DecodeError] naming the variable, the entry and the reason. Nothing
// inherited is not an error.
//
// # systemd
//
// Without [EnvFDs], systemd's LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
// are read as sd_listen_fds(3) does, so a socket-activated service works
// unchanged. Such sockets are claimed by name, or failing that by address.
//
// # Use
//
// [Take] is the one process-global: it reads and unsets the variables, and
// returns the [Files] to claim sockets from. [Decode] and [Env.Encode] are
// pure and work on any environment.
//
// Fd checks need a Unix system; elsewhere [Open] fails with
// [ErrNotSupported] for every inherited fd.
package inherit
