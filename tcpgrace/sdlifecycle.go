package tcpgrace

import (
	"context"
	"fmt"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/text"
)

// What each generation tells the service manager, and when. Only the
// main process's messages count under systemd's default NotifyAccess=main,
// so a generation speaks while it is the one systemd knows: the first one
// from Ready on, each next one from the moment its parent named it with
// MAINPID=, until it hands over in turn.

// sdObserver tells the service manager what the event stream says, if
// one listens. extending is set while an upgrade
// or a drain keeps pushing the manager's timeout.
type sdObserver struct {
	u         *Upgrader
	extending func() // stops the EXTEND_TIMEOUT_USEC= pings; nil when none run
}

// on is the event stream's subscriber.
func (o *sdObserver) on(e event.Event) {
	u := o.u
	if !u.sd.enabled() {
		return
	}
	switch e.Kind {
	case event.Ready:
		u.sdReady(e.HasParent)
	case event.UpgradeStarted:
		o.extending = u.sdUpgrading()
	case event.UpgradeEnded:
		o.stopExtending()
		u.sdUpgraded(e.Child, e.Err)
	case event.Stopping:
		if e.Serving {
			u.sdStopping()
		}
	case event.Draining:
		if e.Serving {
			o.extending = u.sdDraining(e.Deadline)
		}
	case event.Drained:
		o.stopExtending()
		if e.Serving {
			u.fdStoreState() // the next start inherits it from the fd store
		}
	}
}

func (o *sdObserver) stopExtending() {
	if o.extending != nil {
		o.extending()
		o.extending = nil
	}
}

// sdNotify sends lines without waiting, logging a failure (at most one
// warning every sdnotify.WarnEvery, with how many messages were lost):
// the service manager is told what it can be told, and serving, stopping
// and upgrading never depend on it.
func (u *Upgrader) sdNotify(lines ...string) { u.sd.notify(u.log, lines...) }

// sdCheckEnv logs a service manager variable that New ignored.
func (u *Upgrader) sdCheckEnv() {
	if u.sd != nil && u.sd.envErr != nil {
		u.log.Warn("sd_notify", "err", u.sd.envErr)
	}
}

// sdReady is called by Ready. A first generation says READY=1; a next one
// is announced by its parent (sdUpgraded). Either way it starts the
// watchdog pings.
func (u *Upgrader) sdReady(hasParent bool) {
	if !u.sd.enabled() {
		return
	}
	if !hasParent {
		u.sdNotify("READY=1", fmt.Sprintf("STATUS=serving, generation %d", u.Generation()))
	}
	if d := u.sd.watchdog; d > 0 {
		go u.sdWatchdog(d / 2)
	}
}

// sdWatchdog sends WATCHDOG=1 every interval until this generation stops
// serving (Exit is closed: it handed over, or shuts down).
func (u *Upgrader) sdWatchdog(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	u.sdNotify("WATCHDOG=1")
	for {
		select {
		case <-t.C:
			u.sdNotify("WATCHDOG=1")
		case <-u.exit:
			return
		}
	}
}

// sdUpgrading is called when an upgrade starts: RELOADING=1, then
// EXTEND_TIMEOUT_USEC= until the returned function is called, so that a
// slow next generation is bounded by ReadyTimeout, not by the manager's
// timeout.
func (u *Upgrader) sdUpgrading() (done func()) {
	u.sdNotify(sdnotify.Reloading(fmt.Sprintf("upgrading to generation %d", u.Generation()+1))...)
	return u.sdExtend(context.Background(), func() string { return "" })
}

// sdUpgraded is called when an upgrade is over. On success the next
// generation becomes the main process and the service is ready again; on
// failure this one still is, and STATUS= says why.
func (u *Upgrader) sdUpgraded(child int, err error) {
	if err != nil {
		u.sdNotify("READY=1", fmt.Sprintf("STATUS=serving, generation %d; upgrade failed: %v", u.Generation(), err))
		return
	}
	if child <= 0 { // a taker in another pid namespace: no pid the manager could follow
		u.sdNotify(fmt.Sprintf("STATUS=handed over to generation %d, a process in another pid namespace", u.Generation()+1))
		return
	}
	u.sdNotify(fmt.Sprintf("MAINPID=%d", child), "READY=1",
		fmt.Sprintf("STATUS=serving, generation %d", u.Generation()+1))
	// This generation may exit within milliseconds (its connections moved):
	// the manager must have read MAINPID= before, or it finds no unit for
	// a message from a process that is gone, drops it, and takes the exit
	// for the service's end.
	if err := u.sd.sender.Barrier(sdBarrierWait); err != nil {
		u.log.Warn("sd_notify: MAINPID= may not have reached the service manager", "err", err)
	}
}

// sdBarrierWait bounds the wait for the manager to read MAINPID=.
const sdBarrierWait = 2 * time.Second

// sdStopping is called when a generation that still is the main process
// begins its final drain: STOPPING=1 and how many connections it waits
// for. (One that handed over says nothing: it is no longer the main
// process.)
func (u *Upgrader) sdStopping() {
	u.sdNotify("STOPPING=1", u.sdDrainStatus())
}

// sdDraining keeps the manager's stop timeout ahead of a drain that still
// runs, telling how many connections are left, until the returned
// function is called or the drain's deadline (if not zero) passes.
func (u *Upgrader) sdDraining(deadline time.Time) (done func()) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if !deadline.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	stop := u.sdExtend(ctx, u.sdDrainStatus)
	return func() {
		stop()
		cancel()
	}
}

func (u *Upgrader) sdDrainStatus() string {
	u.mu.Lock()
	n := u.conns.len()
	u.mu.Unlock()
	return fmt.Sprintf("STATUS=draining %s, generation %d", text.Count(n, "connection", "connections"), u.Generation())
}

// sdExtend sends EXTEND_TIMEOUT_USEC= (with status(), if not empty) every
// sdExtendStep/3 until the returned function is called or ctx ends.
func (u *Upgrader) sdExtend(ctx context.Context, status func() string) (done func()) {
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(sdExtendStep / 3)
		defer t.Stop()
		for {
			lines := []string{sdnotify.ExtendTimeout(sdExtendStep)}
			if s := status(); s != "" {
				lines = append(lines, s)
			}
			u.sdNotify(lines...)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		cancel()
		<-finished
	}
}
