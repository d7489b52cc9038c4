package wire

import (
	"errors"
	"fmt"
	"iter"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// Protocol constants. They are named here once; every other file refers to
// them by name.
const (
	// EnvFDs is the variable a tcpgrace parent sets in its child's
	// environment. Its value is
	//
	//	v1;pid=<writer pid>;gen=<generation>;ready=<fd>[;pipe=<inode>][;older=<pid>,...]
	//	  [;keep=<name>,...][;owned=<name>:<dev>:<inode>,...][;mail=<fd>,<fd>][;tally=<tally>]
	//	  [;handoff=<fd>][;tickets=<fd>]
	//	  ;fd=<entry>;...
	//
	// where each entry is "name,fd,network,address" with name and address
	// escaped as net/url.QueryUnescape reads them back: each byte of
	// ",;=%+", space, a control byte or one past ASCII as %XX, so neither
	// may contain a raw ',' or ';'. (Earlier builds escaped every byte
	// net/url.QueryEscape does, ':' and '/' too; every build reads both.)
	// The pid is the parent's. ready is the write end of the readiness
	// pipe. pipe, optional, is that pipe's inode as the writer's
	// fstat(2) saw it: it tells the process the value was written for from
	// one with a stale copy (see [Take]); without it a process honours the
	// value only when pid is its own parent pid. older, optional, lists
	// the pids of generations before the writer that were still alive
	// (draining) when it wrote. keep, optional, lists (query-escaped) the
	// Unix sockets whose files belong to someone else (systemd): no
	// generation may remove them. owned, optional, lists (query-escaped
	// names) the Unix sockets whose files a generation of the chain
	// created, with the device and inode the file had when the socket was
	// bound: a generation removes such a file only while the path still
	// leads to that inode. mail, optional, names the two ends of the
	// service's mailbox, a datagram socket pair every generation holds: a
	// draining generation writes its reports to the second, the serving
	// one reads them from the first. tally, optional, carries the
	// service's counts (see [Tally]). handoff, optional, is the child's
	// end of the hand-off channel (a Unix SOCK_SEQPACKET socket, see
	// internal/handoff), on which the writer gives the reader idle
	// connections and its state after the reader said ready. tickets,
	// optional, is the read end of a pipe that holds the TLS session-ticket
	// keys (see [EncodeTicketKeys]), written and closed by the writer before
	// the reader started. pipe, owned, mail, tally, handoff and tickets were
	// added to v1 before any release.
	EnvFDs = "TCPGRACE_FDS"

	// Version is the first field of [EnvFDs]; a value of another version is
	// rejected, never guessed at.
	Version = "v1"

	// EnvListenPID, EnvListenFDs and EnvListenFDNames are systemd's socket
	// activation variables (sd_listen_fds(3)). Their fds start at
	// [ListenFDsStart].
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenFDNames = "LISTEN_FDNAMES"

	// ListenFDsStart is the first inherited fd number: 0, 1 and 2 are stdio,
	// and os/exec places ExtraFiles[i] at fd 3+i.
	ListenFDsStart = 3

	// MaxEntries bounds the number of entries one variable may carry.
	MaxEntries = 1024

	// MaxValueLen bounds the length of one variable's value in bytes.
	MaxValueLen = 1 << 20

	// MaxNameLen bounds the length of a socket name in bytes.
	MaxNameLen = 255
)

// Sentinel errors. Every decoding error is a [*DecodeError] that unwraps to
// one of them, so callers test with errors.Is.
var (
	// ErrMalformed reports a value that does not follow the wire format.
	ErrMalformed = errors.New("inherit: malformed value")
	// ErrDuplicate reports an fd or a name that appears twice.
	ErrDuplicate = errors.New("inherit: duplicate entry")
	// ErrBadFD reports an fd that is closed, not a socket, or not the kind
	// of socket its entry says.
	ErrBadFD = errors.New("inherit: bad file descriptor")
	// ErrMismatch reports a name asked for with another network or
	// address than it was inherited with.
	ErrMismatch = errors.New("inherit: inherited with another network or address")
	// ErrTaken reports a second call of [Take] in one process.
	ErrTaken = errors.New("inherit: inherited sockets already taken")
	// ErrNotSupported reports a platform without fd inheritance.
	ErrNotSupported = errors.New("inherit: not supported on this platform")
)

// DecodeError says which variable, which entry (counted from 0, or -1 for
// the value as a whole) and why. It unwraps to a sentinel error.
type DecodeError struct {
	Var    string // the environment variable, e.g. TCPGRACE_FDS
	Entry  int    // index of the offending entry, -1 if none in particular
	Reason string // what is wrong, in words
	Err    error  // the sentinel: ErrMalformed, ErrDuplicate or ErrBadFD
}

// Error implements error.
func (e *DecodeError) Error() string {
	if e.Entry < 0 {
		return fmt.Sprintf("inherit: %s: %s", e.Var, e.Reason)
	}
	return fmt.Sprintf("inherit: %s: entry %d: %s", e.Var, e.Entry, e.Reason)
}

// Unwrap returns the sentinel error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Entry is one inherited socket.
type Entry struct {
	Name    string // the name the socket was registered under
	FD      int    // the fd number in the child
	Network string // tcp, tcp4, tcp6, unix, udp, udp4, udp6
	Address string // the address as it was asked for, e.g. "127.0.0.1:0"
}

// UnixFile is the file of an inherited Unix socket that a generation of
// the chain created: the device and inode the file had when the socket
// was bound to it. The file is the socket's only while its path still
// leads to that inode.
type UnixFile struct {
	Name          string // the entry's name
	sockfd.FileID        // st_dev and st_ino of the socket file
}

// Env is the decoded content of the environment.
type Env struct {
	Source     string     // the variable it came from: EnvFDs or EnvListenFDs
	Writer     int        // pid of the process that wrote it
	Generation int        // generation of the process reading it (1 on a cold start)
	ReadyFD    int        // readiness pipe fd, -1 if none (systemd)
	Pipe       uint64     // inode of the readiness pipe, 0 if not given
	Older      []int      // pids of generations before the writer, still draining when it wrote
	Keep       []string   // names of Unix sockets whose files no generation may remove
	Owned      []UnixFile // Unix sockets whose files the chain created
	Mail       [2]int     // the mailbox's in and out fds; zero or -1 if none
	Tally      *Tally     // the service's counts; nil if none
	Handoff    int        // the child's end of the hand-off channel; zero or -1 if none
	Tickets    int        // the pipe that holds the TLS session-ticket keys; zero or -1 if none
	Entries    []Entry    // in fd order

	names map[string]int // each entry's index by name, once checkFDs passed (nil for systemd's)
}

// HasMail reports whether e names a mailbox.
func (e *Env) HasMail() bool { return e.Mail[0] >= ListenFDsStart && e.Mail[1] >= ListenFDsStart }

// HasHandoff reports whether e names a hand-off channel.
func (e *Env) HasHandoff() bool { return e.Handoff >= ListenFDsStart }

// HasTickets reports whether e names a tickets pipe.
func (e *Env) HasTickets() bool { return e.Tickets >= ListenFDsStart }

// Encode returns the value of [EnvFDs] for a child of process pid. It does
// not validate e: what [Decode] would reject, Encode may still produce.
func (e *Env) Encode(pid int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s;pid=%d;gen=%d;ready=%d", Version, pid, e.Generation, e.ReadyFD)
	if e.Pipe != 0 {
		fmt.Fprintf(&b, ";pipe=%d", e.Pipe)
	}
	older := make([]string, len(e.Older))
	for i, p := range e.Older {
		older[i] = strconv.Itoa(p)
	}
	keep := make([]string, len(e.Keep))
	for i, name := range e.Keep {
		keep[i] = url.QueryEscape(name)
	}
	owned := make([]string, len(e.Owned))
	for i, f := range e.Owned {
		owned[i] = fmt.Sprintf("%s:%d:%d", url.QueryEscape(f.Name), f.Dev, f.Ino)
	}
	writeList(&b, "older", older)
	writeList(&b, "keep", keep)
	writeList(&b, "owned", owned)
	if e.HasMail() {
		fmt.Fprintf(&b, ";mail=%d,%d", e.Mail[0], e.Mail[1])
	}
	if e.Tally != nil {
		fmt.Fprintf(&b, ";tally=%s", e.Tally.encode())
	}
	if e.HasHandoff() {
		fmt.Fprintf(&b, ";handoff=%d", e.Handoff)
	}
	if e.HasTickets() {
		fmt.Fprintf(&b, ";tickets=%d", e.Tickets)
	}
	// The entries, the bulk of a value with many sockets, without fmt:
	// one allocation for them all.
	buf := make([]byte, 0, len(e.Entries)*48)
	for _, en := range e.Entries {
		buf = append(buf, ";fd="...)
		buf = appendEscaped(buf, en.Name)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, int64(en.FD), 10)
		buf = append(buf, ',')
		buf = append(buf, en.Network...)
		buf = append(buf, ',')
		buf = appendEscaped(buf, en.Address)
	}
	b.Write(buf)
	return b.String()
}

// appendEscaped appends s to b, each byte the value's syntax uses
// (";,=%+"), space, a control byte and each byte past ASCII written as
// %XX, which url.QueryUnescape reads back. Addresses and names need none
// of it as a rule ("127.0.0.1:8080", "[::1]:443", "/run/app.sock"), so
// decoding them allocates nothing.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f || c == ';' || c == ',' || c == '=' || c == '%' || c == '+':
			b = append(b, '%', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}

// writeList appends ";key=v1,v2..." unless values is empty.
func writeList(b *strings.Builder, key string, values []string) {
	if len(values) > 0 {
		fmt.Fprintf(b, ";%s=%s", key, strings.Join(values, ","))
	}
}

// Lookup is the signature of os.LookupEnv: decoding reads the environment
// only through it.
type Lookup func(key string) (string, bool)

// Decode reads the inherited sockets from the environment without touching
// any fd or the environment itself: it is pure. pid and ppid are the
// reading process's pid and parent pid.
//
// [EnvFDs] wins over systemd's variables. A value written for another
// process (its pid is not ppid, or LISTEN_PID is not pid) is ignored.
// Being pure, Decode cannot look at the readiness pipe, so it also ignores
// the value in a process whose parent died after starting it; [Take]
// honours it there. Nothing inherited returns (nil, nil): a first start
// is not an error. A present but malformed value returns a
// [*DecodeError].
func Decode(lookup Lookup, pid, ppid int) (*Env, error) {
	e, err := decode(lookup, pid, ppid, nil)
	if e != nil {
		e.names = nil // Take's alone: Open builds its own
	}
	return e, err
}

// pipeProbe looks at the fd that a value names as its readiness pipe:
// whether it is the write end of the pipe with inode ino, and whether
// that pipe has lost its last reader.
type pipeProbe func(fd int, ino uint64) (same, noReader bool)

// decode is Decode; with probe set it also honours a value in the
// process it was written for after that process's parent died (see
// meantFor).
func decode(lookup Lookup, pid, ppid int, probe pipeProbe) (*Env, error) {
	if v, ok := lookup(EnvFDs); ok {
		return decodeFDs(v, ppid, probe)
	}
	if _, ok := lookup(EnvListenFDs); ok {
		return decodeSystemd(lookup, pid)
	}
	return nil, nil
}

// meantFor reports whether e was written for the process reading it,
// whose parent is ppid.
//
// Without a pipe inode, or without probe (Decode), that is the case when
// ppid wrote it. With both, the fd the value names as its readiness pipe
// must be that pipe's write end, and either ppid wrote the value, or the
// pipe has no reader left: the writer held the only read end, so it died
// (a process is re-parented only after its parent's fds are closed), and
// this process, the one it started, takes the sockets and serves alone.
// A grandchild with a stale copy of the value is told apart either way:
// it has no fd on that pipe (Take makes every inherited fd close-on-exec),
// or, if it got one before its parent's Take, the writer still reads the
// pipe and is not its parent.
func (e *Env) meantFor(ppid int, probe pipeProbe) bool {
	if probe == nil || e.Pipe == 0 {
		return e.Writer == ppid
	}
	same, noReader := probe(e.ReadyFD, e.Pipe)
	return same && (e.Writer == ppid || noReader)
}

func malformed(entry int, format string, args ...any) *DecodeError {
	return &DecodeError{Var: EnvFDs, Entry: entry, Reason: fmt.Sprintf(format, args...), Err: ErrMalformed}
}

func decodeFDs(v string, ppid int, probe pipeProbe) (*Env, error) {
	fields, err := afterVersion(v)
	if err != nil {
		return nil, err
	}
	// The fields that begin with fd=: the version's is not one.
	n := strings.Count(v, ";fd=")
	if n > MaxEntries {
		return nil, malformed(-1, "%d entries, more than %d", n, MaxEntries)
	}
	e, err := decodeFields(fields, n)
	if err != nil {
		return nil, err
	}
	if !e.meantFor(ppid, probe) {
		return nil, nil // written for another process: not ours to read
	}
	if err := e.checkFDs(); err != nil {
		return nil, err
	}
	return e, nil
}

// afterVersion checks v's length and version, and returns the fields
// after the version, split at ";" as they are iterated (no slice of
// them is made).
func afterVersion(v string) (iter.Seq[string], error) {
	if len(v) > MaxValueLen {
		return nil, malformed(-1, "value is %d bytes, more than %d", len(v), MaxValueLen)
	}
	version, rest, more := strings.Cut(v, ";")
	if version != Version {
		return nil, malformed(-1, "version %q is not %q", trunc(version), Version)
	}
	if !more {
		return func(func(string) bool) {}, nil // no field at all
	}
	return strings.SplitSeq(rest, ";"), nil
}

// decodeFields decodes the key=value fields after the version: each
// once (fd= as often as there are entries), pid, gen and ready required.
func decodeFields(fields iter.Seq[string], entries int) (*Env, error) {
	e := &Env{Source: EnvFDs, ReadyFD: -1}
	if entries > 0 {
		e.Entries = make([]Entry, 0, entries)
	}
	seen := map[string]bool{}
	for f := range fields {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, malformed(-1, "field %q is not key=value", trunc(f))
		}
		if key != "fd" && seen[key] {
			return nil, malformed(-1, "field %q given twice", key)
		}
		seen[key] = true
		if err := e.setField(key, val); err != nil {
			return nil, err
		}
	}
	for _, key := range []string{"pid", "gen", "ready"} {
		if !seen[key] {
			return nil, malformed(-1, "field %q missing", key)
		}
	}
	return e, nil
}

func (e *Env) setField(key, val string) error {
	var err error
	switch key {
	case "pid":
		e.Writer, err = parseInt(val, 1)
	case "gen":
		e.Generation, err = parseInt(val, 1)
	case "ready":
		e.ReadyFD, err = parseFD(val)
	case "pipe":
		e.Pipe, err = parseUint(val, 1)
	case "older":
		e.Older, err = parsePIDs(val)
	case "keep":
		e.Keep, err = parseNames(val)
	case "owned":
		e.Owned, err = parseOwned(val)
	case "mail":
		e.Mail, err = parseMail(val)
	case "tally":
		e.Tally, err = parseTally(val)
	case "handoff":
		e.Handoff, err = parseFD(val)
	case "tickets":
		e.Tickets, err = parseFD(val)
	case "fd":
		var en Entry
		en, err = parseEntry(val, len(e.Entries))
		e.Entries = append(e.Entries, en)
		return err
	default:
		return malformed(-1, "unknown field %q", trunc(key))
	}
	if err != nil {
		return malformed(-1, "field %q: %v", key, err)
	}
	return nil
}

func parseEntry(val string, i int) (Entry, error) {
	var parts [4]string
	rest, n := val, 0
	for ; n < 3; n++ {
		var ok bool
		if parts[n], rest, ok = strings.Cut(rest, ","); !ok {
			break
		}
	}
	parts[n] = rest
	if n != 3 || strings.IndexByte(rest, ',') >= 0 {
		return Entry{}, malformed(i, "%d comma-separated parts, want 4 (name,fd,network,address)", strings.Count(val, ",")+1)
	}
	name, err := url.QueryUnescape(parts[0])
	if err != nil {
		return Entry{}, malformed(i, "name: %v", err)
	}
	if err := CheckName(name); err != nil {
		return Entry{}, malformed(i, "%v", err)
	}
	fd, err := parseFD(parts[1])
	if err != nil {
		return Entry{}, malformed(i, "name %q: %v", name, err)
	}
	if !KnownNetwork(parts[2]) {
		return Entry{}, malformed(i, "name %q: unknown network %q", name, trunc(parts[2]))
	}
	addr, err := url.QueryUnescape(parts[3])
	if err != nil || addr == "" || strings.IndexByte(addr, 0) >= 0 {
		return Entry{}, malformed(i, "name %q: bad address %q", name, trunc(parts[3]))
	}
	return Entry{Name: name, FD: fd, Network: parts[2], Address: addr}, nil
}

// checkFDs rejects two entries with one fd or one name (names may repeat
// only in systemd's variables), an entry on the ready fd, and an owned
// file that is no Unix entry's.
func (e *Env) checkFDs() error {
	names, err := checkUnique(e.Entries, e.Source, e.Source != EnvListenFDs)
	if err != nil {
		return err
	}
	e.names = names
	for i, en := range e.Entries {
		if en.FD == e.ReadyFD {
			return &DecodeError{Var: e.Source, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("fd %d is the ready fd", en.FD)}
		}
		if e.HasMail() && (en.FD == e.Mail[0] || en.FD == e.Mail[1]) {
			return &DecodeError{Var: e.Source, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("fd %d is a mailbox fd", en.FD)}
		}
		if e.HasHandoff() && en.FD == e.Handoff {
			return &DecodeError{Var: e.Source, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("fd %d is the hand-off channel's fd", en.FD)}
		}
		if e.HasTickets() && en.FD == e.Tickets {
			return &DecodeError{Var: e.Source, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("fd %d is the tickets pipe's fd", en.FD)}
		}
	}
	if e.HasTickets() && (e.Tickets == e.ReadyFD || e.Tickets == e.Handoff || e.HasMail() && (e.Tickets == e.Mail[0] || e.Tickets == e.Mail[1])) {
		return &DecodeError{Var: e.Source, Entry: -1, Err: ErrDuplicate,
			Reason: fmt.Sprintf("tickets fd %d is also the ready fd, a mailbox fd or the hand-off fd", e.Tickets)}
	}
	if e.HasMail() && (e.Mail[0] == e.ReadyFD || e.Mail[1] == e.ReadyFD) {
		return &DecodeError{Var: e.Source, Entry: -1, Err: ErrDuplicate,
			Reason: fmt.Sprintf("mailbox fds %d,%d include the ready fd", e.Mail[0], e.Mail[1])}
	}
	if e.HasHandoff() && (e.Handoff == e.ReadyFD || e.HasMail() && (e.Handoff == e.Mail[0] || e.Handoff == e.Mail[1])) {
		return &DecodeError{Var: e.Source, Entry: -1, Err: ErrDuplicate,
			Reason: fmt.Sprintf("hand-off fd %d is also the ready fd or a mailbox fd", e.Handoff)}
	}
	return e.checkOwned()
}

// checkOwned makes sure that every owned file names a Unix entry, once,
// and none that keep says belongs to someone else.
func (e *Env) checkOwned() error {
	seen := map[string]bool{}
	for _, f := range e.Owned {
		bad := func(err error, format string) error {
			return &DecodeError{Var: e.Source, Entry: -1, Err: err, Reason: fmt.Sprintf(format, f.Name)}
		}
		switch {
		case seen[f.Name]:
			return bad(ErrDuplicate, "owned names %q twice")
		case slices.Contains(e.Keep, f.Name):
			return bad(ErrMalformed, "%q is both kept and owned")
		case !slices.ContainsFunc(e.Entries, func(en Entry) bool { return en.Name == f.Name && en.Network == "unix" }):
			return bad(ErrMalformed, "owned names %q, which is no unix entry")
		}
		seen[f.Name] = true
	}
	return nil
}

// checkUnique rejects two entries with one fd and (when names is set) two
// entries with one name; then it returns each entry's index by name.
func checkUnique(entries []Entry, variable string, names bool) (map[string]int, error) {
	// Fds that increase from entry to entry, as an exec'd hand-off and
	// systemd give them, are unique without a map of them.
	var fds map[int]int
	for i := 1; i < len(entries); i++ {
		if entries[i].FD <= entries[i-1].FD {
			fds = make(map[int]int, len(entries))
			break
		}
	}
	var byName map[string]int
	if names {
		byName = make(map[string]int, len(entries))
	}
	for i, en := range entries {
		if j, dup := fds[en.FD]; dup {
			return nil, &DecodeError{Var: variable, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("fd %d already named by entry %d", en.FD, j)}
		}
		if fds != nil {
			fds[en.FD] = i
		}
		if !names {
			continue
		}
		if j, dup := byName[en.Name]; dup {
			return nil, &DecodeError{Var: variable, Entry: i, Err: ErrDuplicate,
				Reason: fmt.Sprintf("name %q already used by entry %d", en.Name, j)}
		}
		byName[en.Name] = i
	}
	return byName, nil
}

// CheckName reports whether name may name a socket: 1 to [MaxNameLen]
// bytes of valid UTF-8 with no control characters.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name is %d bytes, more than %d", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not valid UTF-8", name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("name %q contains a control character", name)
	}
	return nil
}

// CheckFDName reports whether name may also be handed on in
// LISTEN_FDNAMES, as systemd accepts it in FileDescriptorName=: 1 to
// [MaxNameLen] printable ASCII characters other than space and ':', which
// separates the names there. Every such name passes [CheckName] too.
func CheckFDName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("a name is 1 to %d characters, not %d", MaxNameLen, len(name))
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' {
			return fmt.Errorf("name %q: only printable ASCII without spaces or ':'", name)
		}
	}
	return nil
}

// KnownNetwork reports whether network is one tcpgrace hands on.
func KnownNetwork(network string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix", "udp", "udp4", "udp6":
		return true
	}
	return false
}

// IsPacket reports whether network is a packet (datagram) network.
func IsPacket(network string) bool { return strings.HasPrefix(network, "udp") }

func parseInt(s string, min int) (int, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || strconv.Itoa(int(n)) != s {
		return 0, fmt.Errorf("%q is not a decimal number", trunc(s))
	}
	if int(n) < min {
		return 0, fmt.Errorf("%d is less than %d", n, min)
	}
	return int(n), nil
}

func parsePIDs(s string) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxEntries {
		return nil, fmt.Errorf("%d pids, more than %d", len(parts), MaxEntries)
	}
	pids := make([]int, 0, len(parts))
	for _, p := range parts {
		pid, err := parseInt(p, 1)
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func parseNames(s string) ([]string, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxEntries {
		return nil, fmt.Errorf("%d names, more than %d", len(parts), MaxEntries)
	}
	names := make([]string, 0, len(parts))
	for _, p := range parts {
		name, err := url.QueryUnescape(p)
		if err == nil {
			err = CheckName(name)
		}
		if err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// parseUint parses a canonical decimal uint64 of at least min.
func parseUint(s string, min uint64) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("%q is not a decimal number", trunc(s))
	}
	if n < min {
		return 0, fmt.Errorf("%d is less than %d", n, min)
	}
	return n, nil
}

// parseOwned parses "name:dev:ino,..." with query-escaped names.
func parseOwned(s string) ([]UnixFile, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxEntries {
		return nil, fmt.Errorf("%d files, more than %d", len(parts), MaxEntries)
	}
	files := make([]UnixFile, 0, len(parts))
	for _, p := range parts {
		fields := strings.Split(p, ":")
		if len(fields) != 3 {
			return nil, fmt.Errorf("%q is not name:dev:inode", trunc(p))
		}
		name, err := url.QueryUnescape(fields[0])
		if err == nil {
			err = CheckName(name)
		}
		if err != nil {
			return nil, err
		}
		f := UnixFile{Name: name}
		if f.Dev, err = parseUint(fields[1], 0); err != nil {
			return nil, fmt.Errorf("%q: device: %w", name, err)
		}
		if f.Ino, err = parseUint(fields[2], 1); err != nil {
			return nil, fmt.Errorf("%q: inode: %w", name, err)
		}
		files = append(files, f)
	}
	return files, nil
}

func parseFD(s string) (int, error) {
	fd, err := parseInt(s, 0)
	if err != nil {
		return 0, fmt.Errorf("fd: %w", err)
	}
	if fd < ListenFDsStart {
		return 0, fmt.Errorf("fd %d is stdio, not an inherited fd", fd)
	}
	return fd, nil
}

// trunc shortens hostile input before it is quoted in an error message.
func trunc(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
