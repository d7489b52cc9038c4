// Package wire is the hand-off's wire format and the child's side of it:
// it decodes the environment that names the sockets a process inherited,
// checks each fd, and hands the sockets out by name. Package tcpgrace
// writes the format and reads it through this package; package inherit
// is the small public face of its child's side. Its errors still say
// "inherit:", the package a user sees.
//
// # Wire format
//
// A tcpgrace parent starts its child with the sockets as extra files (fd 3
// onwards) and one variable, [EnvFDs]:
//
//	TCPGRACE_FDS=v1;pid=4242;gen=2;ready=3;pipe=98311;owned=ctl:2049:1234;fd=web,4,tcp,127.0.0.1%3A8080;fd=ctl,5,unix,%2Frun%2Fctl.sock
//
// pid is the parent's pid and gen the generation of the reader. ready is
// the write end of a pipe on which the child sends [ReadyByte] once it
// serves, or [FailByte] and the reason when it gives up; after ReadyByte
// it keeps its end open while it serves and sends [LeavingByte] when it
// leaves on purpose ([Files.Leave]), so that its parent can tell a crash
// of the serving generation from an intended exit. Each fd entry is name,
// fd, network and address; name and address are query-escaped. Optional
// fields may follow ready: pipe is the readiness pipe's inode; older lists
// the pids of generations before the parent that still drain (so that a
// bound on live generations holds across them); keep lists the Unix
// sockets whose files belong to systemd, which no generation may remove;
// owned lists the Unix sockets whose files a generation created, with the
// file's device and inode, so that a later generation removes the file
// only while the path still leads to it. pipe and owned were added to v1
// before its first release.
//
// A process honours the value when pid is its parent's. [Take] also
// honours it when the parent died while starting it: the value names its
// readiness pipe, fd ready is that pipe, and nobody reads it any more (the
// writer held the only read end). A grandchild that inherits a stale copy
// ignores it: it holds no fd on that pipe (Take makes inherited fds
// close-on-exec), or, if it got one before its parent's Take, the writer
// still reads the pipe and is not its parent.
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
package wire
