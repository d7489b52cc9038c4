// Package control is tcpgrace's control socket: its wire format, its
// client [Do], and its [Server], which the library's Upgrader and
// tcpgrace run both answer with, each giving it a [Handler] of its own
// commands.
//
// One request per connection, one reply, each a line of JSON:
//
//	-> {"v":1,"cmd":"upgrade","timeout_ms":30000}
//	<- {"v":1,"ok":true,"upgrade":{"pid":4243,"generation":3,"old_pid":4242,"handoff_ms":14.2}}
//	<- {"v":1,"ok":false,"code":"failed","error":"tcpgrace: the next generation failed: it exited before it was ready: exit status 3"}
//
// A request names [Version] and one of [CmdUpgrade], [CmdStatus],
// [CmdStop], [CmdReload] and [CmdTakeover]; fields it does not know are
// ignored, so a later version may add optional ones. Every reply names the version the
// server speaks, and either ok with the command's result or the error
// text with a machine-readable [Reply.Code] ([CodeFailed],
// [CodeRefused], [CodeBadRequest], [CodeDenied]). A server older than
// the codes sends none: read that as [CodeFailed].
//
// [Do] tells a request that never reached a server ([ErrNotSent]) from
// one sent but never answered ([ErrOutcomeUnknown]): the server may have
// carried the latter out.
//
// Both ends check the other: a server answers only root and its own uid,
// and [Do] asks only a server run by root or by the caller's own uid
// (SO_PEERCRED), so that another user who bound the path first cannot
// forge a reply.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// Protocol constants.
const (
	// Version is the protocol version: a request of another version is
	// refused with an error reply that names both.
	Version = 1

	// CmdUpgrade runs an upgrade and replies when it is over.
	CmdUpgrade = "upgrade"
	// CmdStatus replies with the serving generation's [Status].
	CmdStatus = "status"
	// CmdStop begins a graceful stop and replies once draining has begun.
	CmdStop = "stop"
	// CmdReload runs the server's reload hook (configuration in place, no
	// new process) and replies with [Reloaded] when it has returned, or
	// fails with [CodeFailed] and the hook's error, or because there is
	// no hook. tcpgrace run forwards SIGHUP to the serving instance
	// instead and replies once the signal was sent: it cannot know when
	// the instance's reload is over.
	CmdReload = "reload"
	// CmdTakeover asks the server to hand every socket it holds to the
	// asking process, which was started on its own (not as the server's
	// child); see package internal/takeover for the exchange that
	// follows. A server that cannot replies with an error, as to any
	// command; one that can replies with [TakeoverOffer] and an fd.
	CmdTakeover = "takeover"

	// MaxRequestLen bounds a request line, newline included.
	MaxRequestLen = 4096
	// MaxReplyLen bounds a reply line, newline included.
	MaxReplyLen = 1 << 20

	// MaxTimeoutMS bounds a request's timeout_ms: 24 hours. A larger one
	// is refused (it would overflow a time.Duration from about 292 years
	// on; no upgrade is meant to take a day).
	MaxTimeoutMS = 24 * 60 * 60 * 1000
)

// The codes of a failed reply ([Reply.Code]): what a client may do next.
// A client that meets a code it does not know treats it as [CodeFailed].
const (
	// CodeFailed: the server tried and the operation failed (an upgrade:
	// the next generation failed, and the old one serves on). The code of
	// [FailReply].
	CodeFailed = "failed"
	// CodeRefused: refused for now, nothing was done: another upgrade
	// runs, the server is not ready yet, too many generations drain, a
	// ready grace runs, it is stopping, or it is busy. Retry later. The
	// code of [RefuseReply].
	CodeRefused = "refused"
	// CodeBadRequest: the server did not understand the request
	// (malformed, another protocol version, an unknown command or
	// field value); nothing was done.
	CodeBadRequest = "bad_request"
	// CodeDenied: the server does not let this client ask (its uid is
	// neither root nor the server's); nothing was done.
	CodeDenied = "denied"
)

// Request is one line a client sends.
type Request struct {
	V   int    `json:"v"`   // Version; Do fills it in
	Cmd string `json:"cmd"` // CmdUpgrade, CmdStatus, CmdStop, CmdReload or CmdTakeover
	// TimeoutMS, for upgrade, bounds the upgrade in milliseconds: the
	// server cancels it then (the next generation is killed) and replies
	// with the error. 0: only the server's ready timeout bounds it. At
	// most MaxTimeoutMS.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Timeout is TimeoutMS as a duration (0: none). ParseRequest keeps it
// within MaxTimeoutMS, so it never overflows.
func (r Request) Timeout() time.Duration {
	return time.Duration(min(max(r.TimeoutMS, 0), MaxTimeoutMS)) * time.Millisecond
}

// Context is parent bounded by the request's timeout, if it has one; the
// caller calls cancel when done.
func (r Request) Context(parent context.Context) (ctx context.Context, cancel context.CancelFunc) {
	if t := r.Timeout(); t > 0 {
		return context.WithTimeout(parent, t)
	}
	return context.WithCancel(parent)
}

// Reply is the one line a server sends back. Exactly one of the result
// fields is set when OK is true; Error and Code are set when it is false.
type Reply struct {
	V     int    `json:"v"`               // the version the server speaks
	OK    bool   `json:"ok"`              // the request succeeded
	Error string `json:"error,omitempty"` // why it did not
	// Code classifies the failure: CodeFailed, CodeRefused,
	// CodeBadRequest or CodeDenied; empty when OK, and from servers older
	// than the codes (read it as CodeFailed).
	Code    string    `json:"code,omitempty"`
	Upgrade *Upgraded `json:"upgrade,omitempty"` // the result of upgrade
	Status  *Status   `json:"status,omitempty"`  // the result of status
	Stop    *Stopping `json:"stop,omitempty"`    // the result of stop
	Reload  *Reloaded `json:"reload,omitempty"`  // the result of reload
	// Takeover is the first reply to takeover: the hand-over begins (a
	// second line reports its outcome as Upgrade, or the failure).
	Takeover *TakeoverOffer `json:"takeover,omitempty"`
}

// TakeoverOffer opens a takeover: the serving generation that gives its
// sockets, as the taker will see them once they are its own.
type TakeoverOffer struct {
	PID        int `json:"pid"`        // the giving generation, in PIDNamespace
	Generation int `json:"generation"` // the generation the taker becomes
	// PIDNamespace is the giver's pid namespace ([PIDNamespace]): a taker
	// in another one cannot use the pids the hand-over names.
	PIDNamespace string `json:"pid_ns,omitempty"`
}

// Upgraded is the result of a successful upgrade.
type Upgraded struct {
	PID        int     `json:"pid"`        // the new generation, which now serves
	Generation int     `json:"generation"` // its generation number
	OldPID     int     `json:"old_pid"`    // the generation that handed over, now draining
	HandoffMS  float64 `json:"handoff_ms"` // how long the upgrade took, ready grace included
	// PIDNamespace is the pid namespace the pids are in ([PIDNamespace]
	// of the server), "" if unknown.
	PIDNamespace string `json:"pid_ns,omitempty"`
}

// Status describes the generation that answered and the older ones still
// draining.
type Status struct {
	PID        int `json:"pid"`        // the process that answered
	Generation int `json:"generation"` // its generation number
	// State is serving, upgrading (a next generation is starting),
	// draining (it handed over) or stopping.
	State string `json:"state"`
	// Executable is the path an upgrade starts; File is the file this
	// process runs.
	Executable  string     `json:"executable"`
	File        string     `json:"file,omitempty"`
	Started     time.Time  `json:"started"`     // when this generation's Upgrader was made
	Listeners   []Listener `json:"listeners"`   // every socket it holds and hands on, by name
	Connections int        `json:"connections"` // its open connections
	// Older lists the older generations still draining, with the
	// connections each has left.
	Older []Older `json:"older"`
	// Supervisor is set when tcpgrace run answered: Generation is then
	// the serving instance's, and Connections -1 (it does not see them).
	Supervisor *Supervisor `json:"supervisor,omitempty"`
	// Totals are the service's counts since its first start, from the
	// library; nil from tcpgrace run and from servers older than them.
	Totals *Totals `json:"totals,omitempty"`
	// Counters are the counters a library server's program added to its
	// status (tcpgrace.Upgrader.AddCounter), by name: this generation's.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// PIDNamespace is the pid namespace every pid here is in
	// ([PIDNamespace] of the server, such as "pid:[4026531836]"), "" if
	// unknown: a server in a container reports pids of its own namespace.
	PIDNamespace string `json:"pid_ns,omitempty"`
}

// Supervisor is what tcpgrace run adds to a status: its instances and
// what went wrong.
type Supervisor struct {
	Instances   []Instance `json:"instances"`               // oldest first
	Restarts    int        `json:"restarts"`                // instances started because the serving one had died
	Crashes     int        `json:"crashes"`                 // deaths of the serving instance in a row
	RestartInMS int64      `json:"restart_in_ms,omitempty"` // a restart waits for its backoff this long
	LastFailure string     `json:"last_failure,omitempty"`  // the last failed start or crash
}

// Totals are the service's counts since its first generation started;
// each generation hands them to the next.
type Totals struct {
	FirstStart     time.Time `json:"first_start"`
	Upgrades       int       `json:"upgrades"`        // hand-offs that succeeded
	UpgradesFailed int       `json:"upgrades_failed"` // upgrades that ended with the old generation serving
	Refusals       int       `json:"refusals"`        // upgrade requests refused before anything started
	// HandoffMSSum is the sum of the successful hand-offs' durations,
	// each from the request until the next generation said ready.
	HandoffMSSum      float64 `json:"handoff_ms_sum"`
	DrainsFinished    int     `json:"drains_finished"`     // connections that closed by themselves in older generations' drains
	DrainsForceClosed int     `json:"drains_force_closed"` // connections cut at older generations' drain deadlines
}

// Instance is one run of the supervised command.
type Instance struct {
	PID        int       `json:"pid"`                // the process tcpgrace run started
	MainPID    int       `json:"main_pid,omitempty"` // the process that counts (MAINPID=), if another
	Generation int       `json:"generation"`
	State      string    `json:"state"`            // starting, serving or draining
	Since      time.Time `json:"since"`            // when it entered State
	Status     string    `json:"status,omitempty"` // its last STATUS=
}

// Listener is one named socket.
type Listener struct {
	Name    string `json:"name"`    // the name it is registered and handed on under
	Network string `json:"network"` // tcp, tcp4, tcp6, unix, udp, udp4, udp6
	Address string `json:"address"` // the bound address: a port 0 resolved, a Unix path
}

// Older is a draining generation as it answered its status channel.
type Older struct {
	PID         int    `json:"pid"`                  // from the hand-off
	Generation  int    `json:"generation,omitempty"` // 0 if it did not answer
	Connections int    `json:"connections"`          // -1 if it did not answer
	Error       string `json:"error,omitempty"`      // why it did not
}

// Stopping is the result of a stop: draining has begun.
type Stopping struct {
	PID          int    `json:"pid"`              // the generation that drains
	Connections  int    `json:"connections"`      // open when draining began
	PIDNamespace string `json:"pid_ns,omitempty"` // the pid namespace PID is in, "" if unknown
}

// Reloaded is the result of a reload: the process that reloaded (the
// library: once its reload hook returned nil) or, from tcpgrace run, the
// serving instance that was sent SIGHUP (its reload may still run).
type Reloaded struct {
	PID          int    `json:"pid"`              // the process that reloaded, or was told to
	Generation   int    `json:"generation"`       // its generation number
	PIDNamespace string `json:"pid_ns,omitempty"` // the pid namespace PID is in, "" if unknown
}

// ErrUpgradeInProgress refuses an upgrade while another one of the same
// service runs: the library's tcpgrace.ErrUpgradeInProgress and tcpgrace
// run's are this one error, refused for now ([CodeRefused]).
var ErrUpgradeInProgress = errors.New("tcpgrace: an upgrade is already in progress")

// ErrConnection wraps every failure to get a reply at all: no socket,
// refused, closed before a reply, a reply that is not the protocol's, a
// server that is not trusted ([ErrUntrustedServer]).
var ErrConnection = errors.New("control: no reply")

// ErrNotSent is wrapped, with [ErrConnection], by an error of [Do] that
// came before the request was written: no socket file, connection
// refused, permission denied, an untrusted server, no connection within
// the timeout. No server took the request: nothing was done.
var ErrNotSent = errors.New("control: request not sent")

// ErrOutcomeUnknown is wrapped, with [ErrConnection], by an error of [Do]
// that came after the request was written: the connection broke or timed
// out, or the reply was not one this client reads. The server may have
// taken the request and carried it out.
var ErrOutcomeUnknown = errors.New("control: request sent, no reply")

// ErrUntrustedServer is the error of [Do] when the process that listens
// on the control socket is neither root nor of the caller's own
// (effective) uid: another user may have bound the path first, and its
// reply would be a forgery. It is wrapped together with [ErrConnection]
// and [ErrNotSent].
var ErrUntrustedServer = errors.New("control: untrusted server")

// Do sends req to the control socket at path and returns the reply. ctx
// bounds the whole exchange. Before it sends anything it checks who
// listens on the socket (SO_PEERCRED): root or the caller's own effective
// uid, or it refuses with [ErrUntrustedServer]. An error (wrapping
// [ErrConnection]) means no reply was read; it wraps [ErrNotSent] if the
// request was not written, [ErrOutcomeUnknown] if it was. A reply that
// says the request failed is returned with a nil error.
func Do(ctx context.Context, path string, req Request) (*Reply, error) {
	if req.V == 0 {
		req.V = Version
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrConnection, ErrNotSent, err)
	}
	defer c.Close()
	if err := checkServer(c, path, uint32(os.Geteuid())); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: encoding the request: %w", ErrConnection, ErrNotSent, err)
	}
	_, werr := c.Write(append(line, '\n'))
	// A server that refuses without reading (a uid it does not let in)
	// has replied and closed before our write: its reply still counts.
	rep, err := ReadReply(c)
	if err != nil && werr != nil {
		return nil, fmt.Errorf("%w: %w: sending to %s: %w", ErrConnection, ErrNotSent, path, werr)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		// The connection's deadline may fire a moment before ctx's.
		if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		}
	}
	return rep, err
}

// checkServer lets a server run by root or by uid self be asked: the
// credentials of the process that listens on the socket c is connected
// to (SO_PEERCRED).
func checkServer(c net.Conn, path string, self uint32) error {
	pid, uid, err := PeerCred(c)
	if err != nil {
		return fmt.Errorf("%w: %w: cannot tell who listens on %s: %w", ErrConnection, ErrUntrustedServer, path, err)
	}
	if uid == 0 || uid == self {
		return nil
	}
	return fmt.Errorf("%w: %w: %s is held by uid %d (pid %d), neither root nor uid %d: not asking it (another user may have bound the path first)",
		ErrConnection, ErrUntrustedServer, path, uid, pid, self)
}

// ReadReply reads and checks one reply line from r.
func ReadReply(r io.Reader) (*Reply, error) {
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxReplyLen {
			return nil, fmt.Errorf("%w: reply longer than %d bytes", ErrConnection, MaxReplyLen)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(line) == 0 {
			return nil, fmt.Errorf("%w: reading the reply: %w", ErrConnection, err)
		}
		return nil, fmt.Errorf("%w: reply cut short after %d bytes: %w", ErrConnection, len(line), err)
	}
	var rep Reply
	if err := json.Unmarshal(bytes.TrimSpace(line), &rep); err != nil {
		return nil, fmt.Errorf("%w: malformed reply %.80q: %w", ErrConnection, line, err)
	}
	if rep.V != Version {
		return nil, fmt.Errorf("%w: reply of protocol version %d, this client speaks %d", ErrConnection, rep.V, Version)
	}
	if !rep.OK && rep.Error == "" {
		return nil, fmt.Errorf("%w: a failed reply without an error text", ErrConnection)
	}
	return &rep, nil
}

// Commands lists the commands a server of this version knows.
var Commands = []string{CmdUpgrade, CmdStatus, CmdStop, CmdReload, CmdTakeover}

// ParseRequest decodes and checks one request line (without its
// newline): a JSON object of this [Version] with a known command.
func ParseRequest(line []byte) (Request, error) {
	var req Request
	if len(bytes.TrimSpace(line)) == 0 {
		return req, errors.New("empty request: send one line of JSON such as {\"v\":1,\"cmd\":\"status\"}")
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, fmt.Errorf("malformed request %.80q: %w", line, err)
	}
	switch {
	case req.V == 0:
		return req, fmt.Errorf("request without a protocol version (\"v\":%d)", Version)
	case req.V != Version:
		return req, fmt.Errorf("request of protocol version %d, this server speaks %d", req.V, Version)
	case req.Cmd == "":
		return req, fmt.Errorf("request without a command (\"cmd\": one of %s)", strings.Join(Commands, ", "))
	case !slices.Contains(Commands, req.Cmd):
		return req, fmt.Errorf("unknown command %.40q (known: %s)", req.Cmd, strings.Join(Commands, ", "))
	case req.TimeoutMS < 0:
		return req, fmt.Errorf("negative timeout_ms %d", req.TimeoutMS)
	case req.TimeoutMS > MaxTimeoutMS:
		return req, fmt.Errorf("timeout_ms %d is above the limit of %d (24h)", req.TimeoutMS, MaxTimeoutMS)
	}
	return req, nil
}
