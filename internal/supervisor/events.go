//go:build linux

package supervisor

import "github.com/tcpgrace/tcpgrace/internal/event"

// The supervisor's lifecycle events are those of its instances, on the
// shared event stream (package internal/event), emitted by the loop where
// it logs the same: a subscriber runs in the loop, sees the loop's state
// as the event left it, and must neither block nor emit. Event.Child is
// the instance's pid (its main process once it has named one) and
// Event.Generation its generation; the kinds, in the order an upgrade
// lives them:
//
//   - UpgradeRequested: SIGUSR1, a control request or an Upgrade call
//     (Reason: "SIGUSR1", "control request", "Upgrade call").
//   - UpgradeRefused: the request was refused before anything started
//     (Err: an upgrade in progress, too many instances, stopping).
//   - UpgradeStarted: the upgrade's instance is being started
//     (Generation: the one it gets; Reason: by what).
//   - ChildStarted: an instance started, for an upgrade, a first start
//     or a restart (Reason: why).
//   - ChildReady: an instance is ready and serves (Took: since its start).
//   - UpgradeEnded: an upgrade's instance serves (Err nil; Took: since
//     its start, the hand-off), or its start failed (Err: why; the
//     serving instance, if any, serves on).
//   - Ready: the first instance this supervisor ran is ready (once).
//   - Draining: an instance was told to stop (Reason: replaced, a stop,
//     stopping on its own, or killed when its start failed; Deadline:
//     when its process group is killed).
//   - Drained: an instance that was not serving exited (Err: how, if it
//     did not exit 0; Took: since it began to drain, or since its start).
//   - Crashed: the serving instance died (Err: how).
//   - Restarting: nothing serves and an instance will start (Deadline:
//     when, after the backoff; Reason: the last failure).
//   - Stopping: the supervisor stops (Reason: the signal, "control
//     request" or "start limit reached"; Serving: whether an instance
//     served); a Draining follows for every instance not draining yet.
//
// A start that fails when it is no upgrade (a first start, a restart)
// shows as that instance's Draining (killed) or Drained (it exited),
// then the Restarting, or the Stopping of a supervisor that gives up.

// emit hands e to the subscribers; the loop calls it.
func (s *Supervisor) emit(e event.Event) { s.events.Emit(e) }
