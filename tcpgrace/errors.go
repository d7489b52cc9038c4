package tcpgrace

import (
	"errors"
	"strings"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// Sentinel errors. Returned errors wrap them with details; test with
// errors.Is.
var (
	// ErrUpgradeInProgress is returned by [Upgrader.Upgrade] while another
	// upgrade of the same process runs.
	ErrUpgradeInProgress = control.ErrUpgradeInProgress
	// ErrUpgraded is returned once this generation has been replaced: it
	// no longer owns its sockets, so it can neither upgrade nor register.
	ErrUpgraded = errors.New("tcpgrace: this generation was already replaced by the next one")
	// ErrClosed is returned after [Upgrader.Shutdown] or [Upgrader.Close].
	ErrClosed = errors.New("tcpgrace: upgrader is shut down")
	// ErrChildFailed reports a next generation that will not serve. The
	// error text says why: the executable could not be started, the child
	// gave a reason with Fail, or it exited, before Ready or within
	// Options.ReadyGrace after it, with the status it exited with.
	ErrChildFailed = errors.New("tcpgrace: the next generation failed")
	// ErrReadyTimeout reports that the next generation was not ready
	// within the ready timeout; it has been killed and reaped.
	ErrReadyTimeout = errors.New("tcpgrace: the next generation was not ready in time")
	// ErrTooManyGenerations reports an Upgrade that would make more
	// generations alive at once than Options.MaxGenerations allows; wait
	// for older ones to finish draining.
	ErrTooManyGenerations = errors.New("tcpgrace: too many generations alive")
	// ErrNameConflict reports a name asked for with another network or
	// address than it is registered (or was inherited) with.
	ErrNameConflict = errors.New("tcpgrace: name already registered with another network or address")
	// ErrNotReady is returned by Upgrade before Ready has returned: a
	// generation that its own parent still waits for cannot start the
	// next one.
	ErrNotReady = errors.New("tcpgrace: Upgrade before Ready")
	// ErrReadyIncomplete wraps an error of [Upgrader.Ready] after which this
	// generation serves all the same: its parent was already told, or it
	// has none (a PID file a first generation could not write, an
	// inherited socket nobody claimed that would not close). Log it and
	// keep serving; exiting would leave nobody serving.
	ErrReadyIncomplete = errors.New("tcpgrace: serving, but part of Ready failed")
	// ErrAlreadyReady is returned by a second call of [Upgrader.Ready].
	ErrAlreadyReady = errors.New("tcpgrace: Ready was already called")
	// ErrServeFailed wraps the error of a server that Server.Run runs when
	// it stopped by itself (not by a hand-off or a drain).
	ErrServeFailed = errors.New("tcpgrace: the server stopped with an error")
	// ErrPID1 is returned by [Upgrader.Upgrade] in a process that is PID 1
	// of its PID namespace (a container's entrypoint): when it exits the
	// kernel kills every process in the namespace, the next generation
	// with it, so an upgrade would end the service. Run the server under
	// an init that stays (docker run --init, tini) or a supervisor.
	ErrPID1 = errors.New("tcpgrace: this process is PID 1 of its PID namespace, whose end would kill the next generation")
	// ErrNotHandedOver is returned by [Handover] when the connection stays
	// in this generation: no next generation takes it (none was started,
	// it refused, it died, or connections do not move here), or the
	// connection cannot move. The caller keeps serving it.
	ErrNotHandedOver = errors.New("tcpgrace: the connection was not handed over")
	// ErrNotSupported is returned on platforms without fd passing.
	ErrNotSupported = errors.New("tcpgrace: not supported on this platform")
)

// wrapped is sentinel with the cause that made it. It prints as
// "sentinel: cause" with the cause's own "tcpgrace: " prefix dropped, so
// that no message says it twice, and errors.Is sees both.
type wrapped struct{ sentinel, cause error }

func wrap(sentinel, cause error) error { return wrapped{sentinel, cause} }

func (w wrapped) Error() string {
	return w.sentinel.Error() + ": " + strings.TrimPrefix(w.cause.Error(), "tcpgrace: ")
}

func (w wrapped) Unwrap() []error { return []error{w.sentinel, w.cause} }
