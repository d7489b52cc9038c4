//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/event"
	"github.com/tcpgrace/tcpgrace/internal/pidfile"
	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/signals"
	"github.com/tcpgrace/tcpgrace/internal/takeover"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// Errors of [Supervisor.Upgrade]; the returned errors wrap them with
// details.
var (
	// ErrStopping: the supervisor is stopping, or has stopped.
	ErrStopping = errors.New("tcpgrace run: stopping")
	// ErrUpgradeInProgress: an instance is starting already; try again
	// once it is ready or has failed.
	ErrUpgradeInProgress = control.ErrUpgradeInProgress
	// ErrTooManyInstances: the upgrade would make more instances alive at
	// once than Config.MaxInstances; wait for draining ones to exit.
	ErrTooManyInstances = errors.New("tcpgrace run: too many instances alive")
	// ErrStartFailed: the new instance could not be started, exited, or
	// was not ready in time; it has been killed, and the serving one
	// still serves.
	ErrStartFailed = errors.New("tcpgrace run: the new instance failed")
	// ErrNotServing: no instance serves (the first one is starting, or one
	// restarts after a crash), so there is none to reload; try again
	// once one is ready.
	ErrNotServing = errors.New("tcpgrace run: no instance serves")
)

// NotifySignals registers the signals [Supervisor.Run] acts on (SIGCHLD,
// SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2) and returns the channel they
// arrive on, which loses none to a burst of another
// (the library's NotifySignals, with SIGCHLD and SIGUSR2). Call it first
// thing, before [New]: until then SIGTERM or SIGHUP kill the process, and
// SIGUSR2 too.
func NotifySignals() <-chan os.Signal {
	stop := []os.Signal{unix.SIGTERM, unix.SIGINT}
	all := slices.Concat([]os.Signal{unix.SIGUSR1}, stop, []os.Signal{unix.SIGHUP, unix.SIGCHLD, unix.SIGUSR2})
	return signals.Notify(nil, all, stop)
}

// stableAfter is how long an instance must have served for its crash not
// to count as one more in a row (the backoff starts over).
const stableAfter = 10 * time.Second

// Supervisor holds the sockets and runs instances of the command over
// them. Its state belongs to the goroutine in [Supervisor.Run]; the other
// methods ask it and are safe for concurrent use.
type Supervisor struct {
	cfg        Config
	log        *slog.Logger
	socks      []*socket
	notify     *notifySocket
	ctl        *controlSocket // nil without Config.Control
	mgr        *manager
	started    time.Time // when the first image of this supervisor bound the sockets
	env        []string  // every instance's environment
	executable string    // the supervisor's own program, for a self-upgrade
	sigs       <-chan os.Signal
	carried    []os.Signal // signals the previous image held during its self-upgrade, for Run to act on

	notes chan note
	reqs  chan func()   // run by the loop
	done  chan struct{} // closed when Run returns

	// events are the instances' lifecycle events (see events.go), which
	// the loop emits; the metrics subscribe to them.
	events  event.Stream
	metrics *runMetrics
	web     *metricsServer // nil without Config.Metrics

	instances   []*instance
	ended       []*instance      // instances whose processes left behind are being stopped (see census)
	strays      *instance        // owns the orphans of no known instance
	seen        map[int]seenProc // the last census
	serving     *instance
	starting    *instance
	nextGen     int
	restarts    int // instances started because the serving one died
	crashes     int // deaths in a row, for the backoff
	lastFailure string
	everReady   bool      // an instance has been ready once: Config.StartLimit no longer applies
	gaveUp      bool      // Config.StartLimit was reached: the supervisor stops and exits 1
	restartAt   time.Time // a restart waits for its backoff until then
	stopping    bool
	stopServing *instance // the instance that served when the stop began
	exitStatus  int

	// The takeover (takeover.go): givingTo while this supervisor waits
	// for a taker; taken, the connection to the supervisor this one took
	// the sockets from (kept open until exit), takenFiles what it sent,
	// told once the first ready or failure went back.
	givingTo   bool
	taken      *takeover.Taken
	takenFiles *wire.Files
	told       bool
}

// New binds the sockets (or, in a self-upgrade, takes over the sockets,
// the instances and the state the previous image of this process passed
// on), makes the notify socket, writes the PID file and makes the
// supervisor a child subreaper, so that orphans of its instances are
// re-parented to it and reaped. It starts no instance and no goroutine;
// [Supervisor.Run] does.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("tcpgrace run: %w", err)
	}
	s := &Supervisor{
		cfg: cfg, log: cfg.Logger.With("pid", os.Getpid()),
		notes: make(chan note, 64), reqs: make(chan func()), done: make(chan struct{}),
		strays: &instance{phase: phaseDraining},
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("tcpgrace run: PR_SET_CHILD_SUBREAPER: %w", err)
	}
	if err := s.findExecutable(); err != nil {
		return nil, err
	}
	s.mgr = takeManager(s.log)
	state, adopting := os.LookupEnv(stateEnv)
	events, err := s.openEvents(adopting)
	if err != nil {
		return nil, fmt.Errorf("tcpgrace run: %w", err)
	}
	if adopting {
		os.Unsetenv(stateEnv)
		err = s.adopt(state)
	} else {
		err = s.bind()
	}
	if err != nil {
		s.failTakeover(err)
		return nil, fmt.Errorf("tcpgrace run: %w", err)
	}
	s.env = instanceEnv(s.socks, s.notify.path)
	s.watchEvents()
	if events != nil {
		s.writeEvents(events)
	}
	s.updateGauges()
	return s, nil
}

// findExecutable sets the program a self-upgrade runs and its argv.
func (s *Supervisor) findExecutable() error {
	if s.executable = s.cfg.Executable; s.executable == "" {
		exe, err := proc.Executable(os.Args)
		if err != nil {
			return fmt.Errorf("tcpgrace run: finding own executable: %w", err)
		}
		s.executable = exe
	}
	if s.cfg.Args == nil {
		s.cfg.Args = os.Args
	}
	return nil
}

// bind is a cold start: the sockets, the notify socket, the PID file.
func (s *Supervisor) bind() error {
	inh, err := wire.Take()
	if err == nil && s.cfg.Takeover != "" {
		inh, err = s.takeFrom(s.cfg.Takeover, inh)
	}
	if err != nil {
		return err
	}
	b, err := bindFrom(inh, s.cfg.Listen, s.cfg.Control, s.log)
	if err != nil {
		return err
	}
	s.socks, s.started = b.socks, time.Now()
	if s.takenFiles != nil {
		s.nextGen = s.takenFiles.Generation() - 1 // the instances go on counting from the old supervisor's
	}
	s.metrics = newRunMetrics(s.started, nil)
	if b.ctl != nil {
		s.ctl = newControlSocket(s, s.cfg.Control, b.ctl, b.ctlOwned)
	}
	if s.notify, err = newNotifySocket(s.log); err != nil {
		s.ctl.close()
		closeSockets(b.socks)
		return err
	}
	if s.cfg.Metrics != "" {
		ln, err := bindMetrics(s.cfg.Metrics)
		if err != nil {
			s.notify.close()
			s.ctl.close()
			closeSockets(b.socks)
			return err
		}
		s.web = newMetricsServer(ln, s.metrics.write, s.log)
	}
	if s.cfg.PIDFile != "" {
		if err := pidfile.Write(s.cfg.PIDFile, os.Getpid()); err != nil {
			s.web.close()
			s.notify.close()
			s.ctl.close()
			closeSockets(b.socks)
			return fmt.Errorf("-pidfile: %w", err)
		}
	}
	s.log.Info("supervisor start", "version", s.cfg.Version, "command", strings.Join(s.cfg.Command, " "),
		"notify_socket", s.notify.path)
	return nil
}

// Run starts the first instance (unless a self-upgrade handed over a
// serving one) and supervises until the supervisor is stopped and every
// instance has exited. It acts on sigs:
// SIGCHLD reaps every child that exited, instances and orphans alike
// (nothing else in the process may wait for children); SIGUSR1 upgrades
// ([Supervisor.Upgrade] without waiting); SIGUSR2 upgrades the supervisor
// itself in place; SIGHUP is forwarded to the serving instance; SIGTERM
// and SIGINT are forwarded to every instance and stop the supervisor.
// Make sigs with [NotifySignals].
// Run returns the exit status of the instance that was serving when the
// stop began (128+N if signal N killed it), or 1 when it gave up after
// Config.StartLimit failed starts, after releasing the sockets, the
// notify socket and the PID file. It may be called once.
func (s *Supervisor) Run(sigs <-chan os.Signal) int {
	defer close(s.done)
	s.notify.start(s.notes)
	s.ctl.start()
	s.web.start()
	s.sigs = sigs
	s.reap() // children that exited while a self-upgrade ran
	s.watchMains()
	if s.serving == nil && s.starting == nil {
		s.start("first start", nil)
	}
	for _, sig := range s.carried {
		s.log.Info("acting on a signal received during the supervisor upgrade", "signal", unix.SignalName(sig.(syscall.Signal)))
		s.onSignal(sig)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var watchdog <-chan time.Time
	if d := s.mgr.watchdog; d > 0 {
		t := time.NewTicker(d / 2)
		defer t.Stop()
		watchdog = t.C
		s.sd("WATCHDOG=1")
	}
	for !s.stopping || len(s.instances) > 0 || len(s.ended) > 0 {
		timer.Reset(s.nextDeadline())
		select {
		case sig := <-sigs:
			s.onSignal(sig)
		case n := <-s.notes:
			s.onNote(n)
		case req := <-s.reqs:
			req()
		case <-watchdog:
			s.sd("WATCHDOG=1")
		case <-timer.C:
		}
		s.onTime(time.Now())
	}
	return s.exit()
}

func (s *Supervisor) onSignal(sig os.Signal) {
	switch sig {
	case unix.SIGCHLD:
		s.reap()
	case unix.SIGTERM, unix.SIGINT:
		s.stop(sig.(syscall.Signal))
	case unix.SIGHUP:
		s.forwardHUP()
	case unix.SIGUSR1:
		s.upgrade("SIGUSR1", nil)
	case unix.SIGUSR2:
		s.selfUpgrade(s.sigs)
	}
}

// reap waits for every child that has exited: instances, and orphans
// re-parented to the supervisor (as PID 1, or as the subreaper); then it
// sweeps, so that what an ended instance left is stopped. What the
// children sent to the notify socket before they exited is handled before
// their exits (a MAINPID= naming a successor, from a main process that
// exits right after).
func (s *Supervisor) reap() {
	type exit struct {
		pid int
		ws  syscall.WaitStatus
	}
	var exits []exit
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		exits = append(exits, exit{pid, ws})
	}
	if len(exits) == 0 {
		return
	}
	s.notify.drain(s.notes, s.onNote)
	for _, e := range exits {
		s.exited(e.pid, e.ws)
	}
	s.sweep()
}

// nextDeadline is how long the loop may sleep before a timer is due.
func (s *Supervisor) nextDeadline() time.Duration {
	next := s.restartAt
	if len(s.ended) > 0 { // what is left of them is swept at least every second
		sweep := time.Now().Add(time.Second)
		for _, in := range s.ended {
			if !in.killed && !in.killAt.IsZero() && in.killAt.Before(sweep) {
				sweep = in.killAt
			}
		}
		if next.IsZero() || sweep.Before(next) {
			next = sweep
		}
	}
	for _, in := range s.instances {
		for _, t := range []time.Time{in.readyBy, in.delayAt, in.killAt} {
			if !t.IsZero() && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
	}
	if next.IsZero() {
		return time.Hour
	}
	return max(time.Until(next), 0)
}

// onTime acts on every deadline that has passed.
func (s *Supervisor) onTime(now time.Time) {
	for _, in := range slices.Clone(s.instances) {
		switch {
		case in.phase == phaseStarting && !in.delayAt.IsZero() && !now.Before(in.delayAt):
			s.ready(in, "still running after -ready-delay")
		case in.phase == phaseStarting && !now.Before(in.readyBy):
			s.startFailed(in, fmt.Errorf("not ready within -ready-timeout %v", s.cfg.ReadyTimeout))
		case in.phase == phaseDraining && !in.killed && !in.killAt.IsZero() && !now.Before(in.killAt):
			s.log.Warn("instance did not exit within -stop-timeout: killing its process group",
				"instance", in.pid, "generation", in.gen, "stop_timeout", s.cfg.StopTimeout)
			s.kill(in)
			in.killAt = time.Time{} // nothing more to wait for but its exit
		}
	}
	if len(s.ended) > 0 || (s.stopping && len(s.instances) == 0) {
		s.sweep() // and at the end of a stop, the strays join the ended
	}
	if !s.restartAt.IsZero() && !now.Before(s.restartAt) {
		s.start("restart after a crash", nil)
	}
}

// find is the instance whose process pid is.
func (s *Supervisor) find(pid int) *instance {
	for _, in := range s.instances {
		if in.main == pid || (in.pid == pid && !in.pidGone) {
			return in
		}
	}
	return nil
}

// do runs f in the loop and waits for it. It returns ErrStopping if the
// loop is over, and ctx's error if ctx ends before the loop takes f.
func (s *Supervisor) do(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case s.reqs <- func() { f(); close(ran) }:
		<-ran
		return nil
	case <-s.done:
		return fmt.Errorf("%w: the supervisor has exited", ErrStopping)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UpgradeResult describes a successful upgrade.
type UpgradeResult struct {
	PID        int           // the new instance, which now serves
	Generation int           // its generation
	OldPID     int           // the instance that served until then, now draining; 0 if none served
	Took       time.Duration // from its start until it was ready
}

// Upgrade starts a new instance of the command over the same sockets and
// waits until it is ready (READY=1, or still running after
// Config.ReadyDelay), when the instance serving until then is sent
// SIGTERM and drains; it returns the new instance then. If the new
// instance cannot be started, exits or is not ready within
// Config.ReadyTimeout, it is killed, the serving instance keeps serving,
// and the error (wrapping [ErrStartFailed]) says why. It fails at once
// with [ErrUpgradeInProgress], [ErrTooManyInstances] or [ErrStopping] when
// it cannot begin. If ctx ends first, the new instance is killed as a
// failed one and the error wraps ctx's. This is what SIGUSR1 does
// (without waiting), for a control socket to call.
func (s *Supervisor) Upgrade(ctx context.Context) (UpgradeResult, error) {
	return s.upgradeBy(ctx, "Upgrade call")
}

// upgradeBy is Upgrade, asked for by by (the UpgradeRequested event's
// reason).
func (s *Supervisor) upgradeBy(ctx context.Context, by string) (UpgradeResult, error) {
	reply := make(chan outcome, 1)
	if err := s.do(ctx, func() { s.upgrade(by, reply) }); err != nil {
		return UpgradeResult{}, err
	}
	select {
	case o := <-reply:
		return o.res, o.err
	case <-ctx.Done():
	case <-s.done:
		return UpgradeResult{}, ErrStopping
	}
	s.do(context.Background(), func() { s.cancelStart(reply, ctx.Err()) })
	select {
	case o := <-reply: // cancelled, or ready just before
		return o.res, o.err
	case <-s.done:
		return UpgradeResult{}, ErrStopping
	}
}

// ReloadResult names the instance a reload was forwarded to.
type ReloadResult struct {
	PID        int // the serving instance's main process, which was sent SIGHUP
	Generation int // its generation
}

// exit releases everything at the end of Run and returns the status.
func (s *Supervisor) exit() int {
	s.ctl.close()
	s.web.close()
	s.notify.stop(s.notes, func(note) {})
	s.notify.close()
	if err := closeSockets(s.socks); err != nil { // the listening ones are closed already, at the stop
		s.log.Warn("releasing the sockets", "err", err)
	}
	if s.cfg.PIDFile != "" {
		if err := pidfile.Remove(s.cfg.PIDFile, os.Getpid()); err != nil {
			s.log.Warn("releasing the pid file", "err", err)
		}
	}
	if s.gaveUp {
		s.exitStatus = 1
	}
	if s.taken != nil {
		s.taken.Close()
	}
	s.log.Info("supervisor exit", "status", s.exitStatus)
	return s.exitStatus
}

// sd tells the service manager above, if any, without waiting; a lost
// message is logged (at most one warning every sdnotify.WarnEvery).
func (s *Supervisor) sd(lines ...string) { s.mgr.Notify(s.log, lines...) }
