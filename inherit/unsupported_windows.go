package inherit

// tcpgrace hands sockets from one generation to the next by fd
// inheritance and Unix-domain sockets, which Windows does not have. Linux
// is the platform, other Unix systems build, and a Windows build fails on
// this undefined name, which says why:
//
//	undefined: tcpgrace_supports_linux_and_unix_only
var _ = tcpgrace_supports_linux_and_unix_only
