//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/event"
)

// Every method here runs in the loop of Run.

// upgrade begins an upgrade that by asked for (a signal's name, "control
// request"), or says why it cannot; reply (if any) gets the outcome.
func (s *Supervisor) upgrade(by string, reply chan<- outcome) {
	s.emit(event.Event{Kind: event.UpgradeRequested, Reason: by})
	var err error
	switch {
	case s.stopping:
		err = ErrStopping
	case s.starting != nil:
		err = fmt.Errorf("%w: generation %d (pid %d)", ErrUpgradeInProgress, s.starting.gen, s.starting.pid)
	case s.givingTo:
		err = ErrTakeoverRunning
	case len(s.instances) >= s.cfg.MaxInstances:
		err = fmt.Errorf("%w: %d, the most -max-instances allows; wait for the draining ones to exit",
			ErrTooManyInstances, len(s.instances))
	}
	if err != nil {
		s.log.Warn("upgrade refused", "err", err)
		s.emit(event.Event{Kind: event.UpgradeRefused, Err: err})
		answer(reply, outcome{err: err})
		return
	}
	reason := "upgrade"
	if s.serving == nil {
		reason = "upgrade while nothing serves"
	}
	s.emit(event.Event{Kind: event.UpgradeStarted, Generation: s.nextGen + 1, Reason: by})
	s.startInstance(reason, true, reply)
}

// outcome is how an upgrade ended, for the Upgrade call waiting for it.
type outcome struct {
	res UpgradeResult
	err error
}

func answer(reply chan<- outcome, o outcome) {
	if reply != nil {
		reply <- o
	}
}

// start starts an instance that is no upgrade (a first start, a
// restart); its outcome goes to reply, if any.
func (s *Supervisor) start(reason string, reply chan<- outcome) {
	s.startInstance(reason, false, reply)
}

// startInstance starts an instance, an upgrade's if upgrade is set; its
// outcome goes to reply, if any.
func (s *Supervisor) startInstance(reason string, upgrade bool, reply chan<- outcome) {
	s.restartAt = time.Time{}
	pid, path, err := s.spawn()
	if err != nil {
		s.startFailed(&instance{gen: s.nextGen + 1, waiters: []chan<- outcome{reply}, pidGone: true, upgrade: upgrade}, err)
		return
	}
	s.nextGen++
	now := time.Now()
	in := &instance{pid: pid, main: pid, gen: s.nextGen, phase: phaseStarting, since: now, reason: reason,
		readyBy: now.Add(s.cfg.ReadyTimeout), upgrade: upgrade}
	if s.cfg.ReadyDelay > 0 {
		in.delayAt = now.Add(s.cfg.ReadyDelay)
	}
	if reply != nil {
		in.waiters = append(in.waiters, reply)
	}
	s.instances = append(s.instances, in)
	s.starting = in
	s.log.Info("instance started", "instance", pid, "generation", in.gen, "reason", reason, "command", path)
	s.emit(event.Event{Kind: event.ChildStarted, Child: pid, Generation: in.gen, Reason: reason})
	s.sdStatus()
}

// ready makes a starting instance the serving one; the one that served
// until now drains.
func (s *Supervisor) ready(in *instance, how string) {
	s.census() // remembers the processes it started: an orphan of it is known later
	s.everReady = true
	took := time.Since(in.since)
	in.phase, in.since = phaseServing, time.Now()
	in.readyBy, in.delayAt = time.Time{}, time.Time{}
	old := s.serving
	s.serving, s.starting = in, nil
	args := []any{"instance", in.pid, "generation", in.gen, "how", how, "took", took.Round(time.Microsecond)}
	if old != nil {
		args = append(args, "replaces", old.main)
	}
	s.log.Info("instance ready", args...)
	s.emit(event.Event{Kind: event.ChildReady, Child: in.pid, Generation: in.gen, Took: took})
	if in.upgrade {
		s.emit(event.Event{Kind: event.UpgradeEnded, Child: in.pid, Generation: in.gen, Took: took})
	}
	if !s.mgr.ready {
		s.emit(event.Event{Kind: event.Ready})
	}
	if old != nil {
		s.drain(old, fmt.Sprintf("replaced by generation %d", in.gen))
	}
	res := UpgradeResult{PID: in.pid, Generation: in.gen, Took: took}
	if old != nil {
		res.OldPID = old.main
	}
	for _, w := range in.waiters {
		answer(w, outcome{res: res})
	}
	in.waiters = nil
	s.tellGiver()
	if !s.mgr.ready {
		s.mgr.ready = true
		s.sd("READY=1", "MAINPID="+strconv.Itoa(syscall.Getpid()), "STATUS="+s.statusLine())
		return
	}
	s.sdStatus()
}

// startFailed ends a start that failed: the instance is killed if it
// runs, the waiters hear why, and a restart is scheduled if nothing
// serves.
func (s *Supervisor) startFailed(in *instance, err error) {
	err = fmt.Errorf("%w: generation %d: %w", ErrStartFailed, in.gen, err)
	if s.starting == in {
		s.starting = nil
	}
	if in.upgrade {
		s.emitUpgradeFailed(in, err)
	}
	if in.pid != 0 && slices.Contains(s.instances, in) { // it runs: its first process, or its MAINPID=
		in.phase, in.since, in.readyBy, in.delayAt = phaseDraining, time.Now(), time.Time{}, time.Time{}
		s.kill(in)
		s.emit(event.Event{Kind: event.Draining, Child: in.main, Generation: in.gen, Reason: "killed: its start failed"})
	}
	s.lastFailure = err.Error()
	for _, w := range in.waiters {
		answer(w, outcome{err: err})
	}
	in.waiters = nil
	if s.serving != nil {
		s.log.Error("upgrade failed", "err", err, "instance", in.pid, "serving", s.serving.pid)
		s.sdStatus()
		return
	}
	s.log.Error("start failed", "err", err, "instance", in.pid)
	if !s.stopping {
		s.crashes++
		if s.startLimitReached() {
			s.giveUp()
			return
		}
		s.scheduleRestart()
	}
}

// emitUpgradeFailed says that in's upgrade ended with err.
func (s *Supervisor) emitUpgradeFailed(in *instance, err error) {
	e := event.Event{Kind: event.UpgradeEnded, Child: in.pid, Generation: in.gen, Err: err}
	if !in.since.IsZero() {
		e.Took = time.Since(in.since)
	}
	s.emit(e)
}

// startLimitReached reports whether Config.StartLimit starts in a row
// have failed while no instance was ever ready. (Until one is, every
// death in a row is a failed start.)
func (s *Supervisor) startLimitReached() bool {
	return !s.everReady && s.cfg.StartLimit > 0 && s.crashes >= s.cfg.StartLimit
}

// giveUp stops the supervisor, as SIGTERM does, after Config.StartLimit
// failed starts of a command that was never ready: Run then returns 1.
// The last failure is logged.
func (s *Supervisor) giveUp() {
	s.log.Error("giving up: the command never became ready", "failed_starts", s.crashes,
		"start_limit", s.cfg.StartLimit, "last_failure", s.lastFailure)
	s.gaveUp = true
	s.failTakeover(fmt.Errorf("tcpgrace run: the command never became ready (%d failed starts): %s", s.crashes, s.lastFailure))
	s.stopBy(unix.SIGTERM, "start limit reached")
}

// cancelStart ends the start that reply waits for, if it still runs: its
// Upgrade call's context ended.
func (s *Supervisor) cancelStart(reply chan<- outcome, why error) {
	if in := s.starting; in != nil && slices.Contains(in.waiters, reply) {
		s.startFailed(in, fmt.Errorf("cancelled: %w", why))
	}
}

// drain tells an instance to stop: SIGTERM, then SIGKILL to its process
// group after the stop timeout.
func (s *Supervisor) drain(in *instance, reason string) {
	in.phase, in.since = phaseDraining, time.Now()
	in.killAt = in.since.Add(s.cfg.StopTimeout)
	err := in.signal(unix.SIGTERM)
	s.log.Info("instance draining", "instance", in.main, "generation", in.gen, "reason", reason, "err", err)
	s.emit(event.Event{Kind: event.Draining, Child: in.main, Generation: in.gen, Reason: reason, Deadline: in.killAt})
}

// exited handles the end of a child the loop reaped.
func (s *Supervisor) exited(pid int, ws syscall.WaitStatus) {
	in := s.find(pid)
	if in == nil {
		if sp, ok := s.seen[pid]; ok && sp.owner != s.strays {
			s.log.Debug("reaped a process an instance left", "process", pid, "generation", sp.owner.gen,
				"status", describe(ws))
			return
		}
		s.log.Debug("reaped an orphan", "process", pid, "status", describe(ws))
		return
	}
	if pid == in.pid && in.main != in.pid && unix.Kill(in.main, 0) == nil {
		in.pidGone = true
		s.log.Info("instance's first process exited; its main process runs on", "instance", in.pid,
			"main", in.main, "status", describe(ws))
		return
	}
	s.gone(in, pid, describe(ws), exitCode(ws))
}

// gone handles the end of an instance, whose process pid (its first or
// its main one) ended as how says, with the exit status code (-1 if
// unknown): what is left of it is stopped, and it counts as a failed
// start or a crash if it was starting or serving.
func (s *Supervisor) gone(in *instance, pid int, how string, code int) {
	s.instances = slices.DeleteFunc(s.instances, func(x *instance) bool { return x == in })
	s.end(in)
	s.log.Info("instance exited", "instance", pid, "generation", in.gen, "phase", in.phase, "status", how)
	if s.stopping && (in == s.stopServing || s.stopServing == nil) && code >= 0 {
		s.exitStatus = code
	}
	if in.phase != phaseServing { // the serving one's end is a crash
		var err error
		if code != 0 {
			err = errors.New(how)
		}
		s.emit(event.Event{Kind: event.Drained, Child: pid, Generation: in.gen, Took: time.Since(in.since), Err: err})
	}
	switch in.phase {
	case phaseStarting:
		in.pidGone = true
		s.startFailed(in, fmt.Errorf("exited (%s) before it was ready", how))
	case phaseServing:
		s.serving = nil
		s.crashed(in, how)
	}
}

// crashed handles the death of the serving instance: nothing serves, the
// sockets stay open (clients queue), and a new instance starts at once,
// or after a backoff if this is one more crash in a row.
func (s *Supervisor) crashed(in *instance, how string) {
	if time.Since(in.since) >= stableAfter {
		s.crashes = 0
	}
	s.crashes++
	s.lastFailure = fmt.Sprintf("generation %d (pid %d) died while serving: %s", in.gen, in.main, how)
	s.log.Error("serving instance died", "instance", in.main, "generation", in.gen, "status", how,
		"crashes_in_a_row", s.crashes)
	s.emit(event.Event{Kind: event.Crashed, Child: in.main, Generation: in.gen, Err: errors.New(how)})
	if s.starting != nil {
		s.log.Info("the starting instance will serve", "instance", s.starting.pid, "generation", s.starting.gen)
		return
	}
	s.scheduleRestart()
}

// scheduleRestart starts an instance now, after the first death in a
// row, or after a backoff that doubles from 100 ms up to 10 s.
func (s *Supervisor) scheduleRestart() {
	s.restarts++
	d := backoff(s.crashes)
	s.emit(event.Event{Kind: event.Restarting, Reason: s.lastFailure, Deadline: time.Now().Add(d)})
	if d == 0 {
		s.start("restart after a crash", nil)
		return
	}
	s.restartAt = time.Now().Add(d)
	s.log.Warn("restarting after a backoff", "backoff", d, "crashes_in_a_row", s.crashes)
	s.sdStatus()
}

// backoff is the delay before the restart after the n-th death in a row.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	if n > 8 {
		return 10 * time.Second
	}
	return min(100*time.Millisecond<<(n-2), 10*time.Second)
}

// stop forwards sig to every instance; Run ends when all have exited. A
// second stop signal is forwarded again. The first one also closes the
// supervisor's copies of the listening sockets at once (stopListening).
func (s *Supervisor) stop(sig syscall.Signal) { s.stopBy(sig, unix.SignalName(sig)) }

// stopBy is stop, for the reason why ("SIGTERM", "control request"),
// which the Stopping event carries.
func (s *Supervisor) stopBy(sig syscall.Signal, why string) {
	now := time.Now()
	if !s.stopping {
		s.emit(event.Event{Kind: event.Stopping, Reason: why, Serving: s.serving != nil})
		s.stopping = true
		s.stopListening()
		s.stopServing = s.serving
		if s.serving == nil && s.lastFailure != "" {
			s.exitStatus = 1 // nothing serves, after a failure; an instance that exits now sets its own
		}
		s.restartAt = time.Time{}
		s.log.Info("stopping: forwarding the signal to every instance", "signal", unix.SignalName(sig),
			"instances", len(s.instances))
		s.sd("STOPPING=1", "STATUS=stopping")
		if in := s.starting; in != nil {
			for _, w := range in.waiters {
				answer(w, outcome{err: ErrStopping})
			}
			in.waiters = nil
		}
	}
	s.serving, s.starting = nil, nil
	for _, in := range s.instances {
		was := in.phase
		in.phase, in.readyBy, in.delayAt = phaseDraining, time.Time{}, time.Time{}
		if !in.killed && (in.killAt.IsZero() || in.killAt.After(now.Add(s.cfg.StopTimeout))) {
			in.killAt = now.Add(s.cfg.StopTimeout)
		}
		in.signal(sig)
		if was != phaseDraining {
			in.since = now
			s.emit(event.Event{Kind: event.Draining, Child: in.main, Generation: in.gen, Reason: "stop: " + why,
				Deadline: in.killAt})
		}
	}
}

// forwardHUP sends SIGHUP to the serving instance: its own reload. It
// fails with ErrStopping or ErrNotServing when there is none to send it
// to, and with the error of kill(2).
func (s *Supervisor) forwardHUP() (ReloadResult, error) {
	var err error
	switch {
	case s.stopping:
		err = fmt.Errorf("%w: no reload", ErrStopping)
	case s.serving == nil:
		err = fmt.Errorf("%w yet (one is starting, or restarting after a crash): no reload; try again once one is ready", ErrNotServing)
	}
	if err != nil {
		s.log.Warn("SIGHUP: not forwarded", "err", err)
		return ReloadResult{}, err
	}
	in := s.serving
	if err := in.signal(unix.SIGHUP); err != nil {
		s.log.Warn("SIGHUP: forwarding failed", "instance", in.main, "err", err)
		return ReloadResult{}, fmt.Errorf("tcpgrace run: SIGHUP to instance %d (generation %d): %w", in.main, in.gen, err)
	}
	s.log.Info("SIGHUP forwarded", "instance", in.main, "generation", in.gen)
	return ReloadResult{PID: in.main, Generation: in.gen}, nil
}

// onNote acts on an sd_notify message. Only instances count: a message
// from any other process is ignored.
func (s *Supervisor) onNote(n note) {
	in := s.find(n.pid)
	if in == nil {
		s.log.Debug("notify socket: ignored a message from a process that is no instance", "sender", n.pid)
		return
	}
	if v, ok := n.fields["MAINPID"]; ok {
		s.setMain(in, v)
	}
	if v, ok := n.fields["STATUS"]; ok {
		in.status = v
		s.log.Info("instance status", "instance", in.main, "generation", in.gen, "text", v)
		if in == s.serving {
			s.sdStatus()
		}
	}
	if n.fields["READY"] == "1" && in.phase == phaseStarting {
		s.ready(in, "READY=1")
	}
	if n.fields["STOPPING"] == "1" && in.phase == phaseServing && !s.stopping {
		s.log.Info("serving instance is stopping on its own: starting a replacement", "instance", in.main,
			"generation", in.gen)
		in.phase, in.since, in.killAt = phaseDraining, time.Now(), time.Now().Add(s.cfg.StopTimeout)
		s.serving = nil
		s.emit(event.Event{Kind: event.Draining, Child: in.main, Generation: in.gen, Reason: "stopping on its own",
			Deadline: in.killAt})
		if s.starting == nil {
			s.start("replacing an instance that stopped on its own", nil)
		}
	}
}

// setMain follows MAINPID=: the instance's main process is now another
// one, which must be a process of this instance (below its first
// process, or an orphan of it: see census), never another instance's.
// A pidfd tells when it dies, even if its own parent reaps it.
func (s *Supervisor) setMain(in *instance, v string) {
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		s.log.Warn("notify socket: bad MAINPID, ignored", "instance", in.main, "value", v)
		return
	}
	if pid == in.main {
		return
	}
	pidfd, err := openPidfd(pid)
	if err != nil {
		s.log.Warn("notify socket: MAINPID names no process, ignored", "instance", in.main, "mainpid", pid, "err", err)
		return
	}
	if !s.ofInstance(in, pid) || !runs(pidfd, pid) {
		closePidfd(pidfd)
		s.log.Warn("notify socket: MAINPID names no process of the instance, ignored", "instance", in.main,
			"mainpid", pid)
		return
	}
	s.log.Info("instance has a new main process", "instance", in.main, "generation", in.gen, "main", pid)
	in.main = pid
	if pidfd >= 0 {
		go s.watchMain(pidfd, pid)
	}
}
