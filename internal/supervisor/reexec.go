//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/sdnotify"
	"github.com/tcpgrace/tcpgrace/internal/sockfd"
)

// The self-upgrade's hand-over: the supervisor execs its new binary in
// place (same pid, so it stays PID 1 and the parent of its instances)
// with the sockets and the notify socket left open and their fds, the
// instances and the counters in stateEnv.
const (
	stateEnv     = "TCPGRACE_RUN_STATE" // the hand-over, JSON (handOver)
	checkEnv     = "TCPGRACE_RUN_CHECK" // "1": the check run of a new binary: decode stateEnv, exit
	stateVersion = 1                    // handOver.V; a binary refuses any other
	checkTimeout = 10 * time.Second     // bounds the check run
)

// handOver is the state one image of the supervisor passes to the next.
type handOver struct {
	V           int             `json:"v"`
	Version     string          `json:"version"` // the build that wrote it
	ExecAt      int64           `json:"exec_at"` // wall clock, ns, just before the exec
	Sockets     []handedSocket  `json:"sockets"`
	NotifyFD    int             `json:"notify_fd"`
	NotifyDir   string          `json:"notify_dir"`
	LockFD      int             `json:"lock_fd,omitempty"` // the runtime directory's lock (rundir.go)
	Manager     string          `json:"manager,omitempty"` // NOTIFY_SOCKET of a service manager above
	WatchdogUS  int64           `json:"watchdog_us,omitempty"`
	Ready       bool            `json:"ready"` // the manager was told READY=1
	Instances   []handedProcess `json:"instances"`
	NextGen     int             `json:"next_gen"`
	Restarts    int             `json:"restarts"`
	Crashes     int             `json:"crashes"`
	LastFailure string          `json:"last_failure,omitempty"`
	Started     int64           `json:"started"`           // wall clock, ns: when the first image bound the sockets
	Control     *handedControl  `json:"control,omitempty"` // the control socket, if any
	// Metrics is the -metrics socket, if any, and Totals the counters its
	// metrics report. An image that does not know the fields binds the
	// socket anew (if it has -metrics) and counts from Restarts.
	Metrics *handedMetrics `json:"metrics,omitempty"`
	Totals  *runTotals     `json:"totals,omitempty"`
	// Ended are the instances that have ended with processes left, which
	// are being stopped (see census); Seen is the last census, which
	// tells the orphans among those processes apart. An image that does
	// not know the fields treats those processes as of no known instance.
	Ended []handedProcess `json:"ended,omitempty"`
	Seen  []handedSeen    `json:"seen,omitempty"`
	// Signals are those that arrived during the self-upgrade, by name,
	// for the next image to act on (SIGUSR1 only: see heldSignals). An
	// image that does not know the field ignores it.
	Signals []string `json:"signals,omitempty"`
}

type handedControl struct {
	Path  string         `json:"path"`
	FD    int            `json:"fd"`
	Owned *sockfd.FileID `json:"owned,omitempty"`
}

type handedMetrics struct {
	Addr string `json:"addr"` // bound, a port 0 resolved
	FD   int    `json:"fd"`
}

type handedSocket struct {
	Listen
	FD    int            `json:"fd"`
	Owned *sockfd.FileID `json:"owned,omitempty"`
}

type handedProcess struct {
	PID     int    `json:"pid"`
	Main    int    `json:"main"`
	Gen     int    `json:"gen"`
	Phase   string `json:"phase"` // serving or draining: a self-upgrade waits for no start
	Since   int64  `json:"since"` // wall clock, ns
	Status  string `json:"status,omitempty"`
	KillIn  int64  `json:"kill_in_ns,omitempty"` // draining: ns left before SIGKILL
	Killed  bool   `json:"killed,omitempty"`
	PIDGone bool   `json:"pid_gone,omitempty"`
	Termed  bool   `json:"termed,omitempty"` // ended: SIGTERM was sent to what is left of it
}

// handedSeen is one process of the last census: its pid and start time,
// and the generation of the instance it was attributed to (0: none).
type handedSeen struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	Gen   int    `json:"gen,omitempty"`
}

// selfUpgrade replaces the supervisor's program in place. It is refused
// while an instance starts, while nothing serves and while stopping: a
// start's deadlines and waiters would not survive the exec. The new
// binary is first run as a child with the state and checkEnv: only if it
// decodes the state and exits 0 does the exec happen, so that a binary
// that does not start, or does not speak this state's version, leaves
// this one running. After the exec the new image starts over in main,
// with the same pid, children, sockets and notify socket.
//
// The loop waits for the check here, so the signals that arrive
// meanwhile are taken from sigs as they come (see heldSignals): none is
// lost to the exec, and a stop signal cancels the self-upgrade and stops.
func (s *Supervisor) selfUpgrade(sigs <-chan os.Signal) {
	if err := s.selfUpgradeBlocked(); err != nil {
		s.log.Warn("supervisor upgrade refused", "err", err)
		return
	}
	held := &heldSignals{}
	defer s.actOnHeld(held) // if this image runs on
	exe, begin := s.executable, time.Now()
	state, err := json.Marshal(s.handOver(nil))
	if err == nil {
		err = s.checkNext(exe, state, sigs, held)
	}
	checked := time.Since(begin)
	if err != nil {
		s.selfUpgradeFailed(exe, err)
		return
	}
	s.notify.stop(s.notes, s.onNote) // what it read meanwhile may change the state
	s.ctl.pause()                    // requests not yet accepted wait for the next image
	s.settleControl()                // requests accepted are answered by this one
	if err := s.selfUpgradeCancelled(); err != nil {
		s.notify.start(s.notes)
		s.ctl.start()
		s.selfUpgradeFailed(exe, err)
		return
	}
	s.web.pause() // scrapes not yet accepted wait for the next image
	err = s.execNext(exe, checked, sigs, held)
	s.notify.start(s.notes)
	s.ctl.start()
	s.web.start()
	s.selfUpgradeFailed(exe, err)
}

// selfUpgradeFailed logs why a self-upgrade did not exec.
func (s *Supervisor) selfUpgradeFailed(exe string, err error) {
	if errors.Is(err, errUpgradeStopped) {
		s.log.Info("supervisor upgrade cancelled: stopping", "executable", exe)
		return
	}
	if s.selfUpgradeBlocked() != nil { // a control request started an upgrade meanwhile
		s.log.Warn("supervisor upgrade refused", "executable", exe, "err", err)
		return
	}
	s.log.Error("supervisor upgrade failed; this version keeps running", "executable", exe, "err", err)
}

// heldSignals are the signals that arrived while a self-upgrade ran and
// the loop could not act on them. SIGHUP is forwarded at once. A stop
// signal cancels the self-upgrade (the check is killed, or the exec not
// done) and is acted on after it. SIGUSR1 is carried across the exec in
// the hand-over (the new image starts the upgrade), or acted on here if
// this image runs on; SIGCHLD likewise (the new image reaps at its start).
// A SIGUSR2 is the self-upgrade under way.
type heldSignals struct {
	stop    os.Signal // the first stop signal, if one came
	upgrade bool      // SIGUSR1
	reap    bool      // SIGCHLD
}

// hold takes sig during a self-upgrade; it reports whether sig is a stop.
func (s *Supervisor) hold(sig os.Signal, h *heldSignals) bool {
	switch sig {
	case unix.SIGTERM, unix.SIGINT:
		if h.stop == nil {
			h.stop = sig
			s.log.Info("stop signal during the supervisor upgrade: cancelling it", "signal",
				unix.SignalName(sig.(syscall.Signal)))
		}
		return true
	case unix.SIGHUP:
		s.forwardHUP()
	case unix.SIGUSR1:
		h.upgrade = true
	case unix.SIGCHLD:
		h.reap = true
	case unix.SIGUSR2:
		s.log.Info("SIGUSR2: the supervisor is upgrading already")
	}
	return false
}

// holdPending takes every signal already waiting on sigs, without
// blocking; it reports whether a stop signal is among the held ones.
func (s *Supervisor) holdPending(sigs <-chan os.Signal, h *heldSignals) bool {
	for {
		select {
		case sig := <-sigs:
			s.hold(sig, h)
		default:
			return h.stop != nil
		}
	}
}

// actOnHeld acts on the signals held during a self-upgrade that did not
// exec: children are reaped, then a stop, then an upgrade (which a stop
// refuses).
func (s *Supervisor) actOnHeld(h *heldSignals) {
	if h.reap {
		s.reap()
	}
	if h.stop != nil {
		s.stop(h.stop.(syscall.Signal))
	}
	if h.upgrade {
		s.upgrade("SIGUSR1", nil)
	}
}

// errUpgradeStopped: a stop signal arrived during the self-upgrade.
var errUpgradeStopped = errors.New("a stop signal arrived: cancelled")

func (s *Supervisor) selfUpgradeBlocked() error {
	switch {
	case s.stopping:
		return ErrStopping
	case s.starting != nil:
		return fmt.Errorf("%w (generation %d): send SIGUSR2 again once it is ready", ErrUpgradeInProgress, s.starting.gen)
	case s.serving == nil:
		return errors.New("tcpgrace run: no instance serves: send SIGUSR2 again once one does")
	}
	return nil
}

// execNext clears close-on-exec on the fds the next image needs and
// execs it (checked is how long the check run took, for the log); it
// returns only if the exec failed or a stop signal came first, with the
// fds restored. It takes what waits on sigs last thing before the exec
// and passes a held SIGUSR1 on; a signal that arrives after that look
// (a few µs) and before the new image registers its own handlers (the
// Go runtime's start, about a millisecond; cmd/tcpgrace registers them
// before main) is lost, or, if it is SIGTERM, SIGINT or SIGHUP, ends the
// supervisor as an unhandled signal does.
func (s *Supervisor) execNext(exe string, checked time.Duration, sigs <-chan os.Signal, held *heldSignals) error {
	fds, err := s.keepAcrossExec()
	if err != nil {
		return err
	}
	s.log.Info("supervisor upgrading in place", "executable", exe, "from_version", s.cfg.Version,
		"check_took", checked.Round(time.Microsecond))
	if s.holdPending(sigs, held) {
		restoreCloexec(fds)
		return errUpgradeStopped
	}
	now := time.Now()
	h := s.handOver(&now)
	if held.upgrade {
		h.Signals, held.upgrade = []string{unix.SignalName(unix.SIGUSR1)}, false
	}
	held.reap = false // the next image reaps first thing
	state, err := json.Marshal(h)
	if err != nil {
		restoreCloexec(fds)
		return err
	}
	err = syscall.Exec(exe, s.cfg.Args, append(os.Environ(), stateEnv+"="+string(state)))
	restoreCloexec(fds)
	return fmt.Errorf("exec %s: %w", exe, err)
}

// keepAcrossExec clears close-on-exec on the fds the next image takes
// over (the notify socket and its directory's lock, the control and the
// metrics socket, the sockets) and returns them; on an error none is left
// cleared.
func (s *Supervisor) keepAcrossExec() ([]int, error) {
	nfd, err := s.notify.fd()
	if err != nil {
		return nil, err
	}
	fds := []int{nfd, int(s.notify.lock.Fd())}
	if s.ctl != nil {
		cfd, err := s.ctl.fd()
		if err != nil {
			return nil, err
		}
		fds = append(fds, cfd)
	}
	if s.web != nil {
		mfd, err := s.web.fd()
		if err != nil {
			return nil, err
		}
		fds = append(fds, mfd)
	}
	for _, sk := range s.socks {
		fds = append(fds, sk.fd)
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			restoreCloexec(fds)
			return nil, fmt.Errorf("fd %d: clearing close-on-exec: %w", fd, err)
		}
	}
	return fds, nil
}

func restoreCloexec(fds []int) {
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
}

// checkNext runs exe as a child, leading a process group of its own,
// with the state and checkEnv, and waits for it (the loop's reaper does
// not run meanwhile: this loop is it). Signals on sigs are held
// meanwhile; a stop signal kills the check's process group at once.
func (s *Supervisor) checkNext(exe string, state []byte, sigs <-chan os.Signal, held *heldSignals) error {
	env := append(os.Environ(), stateEnv+"="+string(state), checkEnv+"=1")
	pid, err := syscall.ForkExec(exe, s.cfg.Args, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{Setpgid: true}})
	if err != nil {
		return fmt.Errorf("starting %s for its check: %w", exe, err)
	}
	deadline := time.Now().Add(checkTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("waiting for the check of %s: %w", exe, err)
		case got == pid && ws.Exited() && ws.ExitStatus() == 0:
			return nil
		case got == pid:
			return fmt.Errorf("the new binary failed its check (%s): is it a tcpgrace that reads hand-over version %d?",
				describe(ws), stateVersion)
		case time.Now().After(deadline):
			killCheck(pid)
			return fmt.Errorf("the new binary's check did not end within %v", checkTimeout)
		}
		if err := s.whileChecking(sigs, held, tick.C); err != nil {
			killCheck(pid)
			return err
		}
	}
}

// whileChecking waits for the next tick of the check's wait, taking a
// signal (see hold) or a control request meanwhile; it returns the error
// that ends the self-upgrade, if one of them does: a stop, or an upgrade
// that a control request started.
func (s *Supervisor) whileChecking(sigs <-chan os.Signal, held *heldSignals, tick <-chan time.Time) error {
	select {
	case sig := <-sigs:
		if s.hold(sig, held) {
			return errUpgradeStopped
		}
	case req := <-s.reqs:
		req()
		return s.selfUpgradeCancelled()
	case <-tick:
	}
	return nil
}

// selfUpgradeCancelled says whether what the loop did during a
// self-upgrade (a control request it ran) ends it: a stop, or an
// instance that now starts.
func (s *Supervisor) selfUpgradeCancelled() error {
	switch err := s.selfUpgradeBlocked(); {
	case err == nil:
		return nil
	case s.stopping:
		return errUpgradeStopped
	default:
		return fmt.Errorf("cancelled by a control request: %w", err)
	}
}

// settleControl lets the requests the control socket accepted before it
// paused finish before the exec, which would end their handlers with no
// reply and leave a stop among them unheard: the loop runs what they ask
// meanwhile. It stops waiting once one of them ends the self-upgrade (a
// stop, an upgrade), or after the bound on one request.
func (s *Supervisor) settleControl() {
	deadline := time.Now().Add(controlReadTimeout + controlWriteTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for s.ctl.busy() && s.selfUpgradeBlocked() == nil {
		if time.Now().After(deadline) {
			s.log.Warn("supervisor upgrade: control requests still open at the exec; their clients get no reply")
			return
		}
		select {
		case req := <-s.reqs:
			req()
		case <-tick.C:
		}
	}
}

// killCheck kills the check run's process group and reaps the check.
func killCheck(pid int) {
	unix.Kill(-pid, unix.SIGKILL)
	unix.Kill(pid, unix.SIGKILL)
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
}

// handOver is the state to pass on; execAt is set for the exec itself.
func (s *Supervisor) handOver(execAt *time.Time) *handOver {
	nfd, _ := s.notify.fd()
	h := &handOver{V: stateVersion, Version: s.cfg.Version, NotifyFD: nfd, NotifyDir: s.notify.dir,
		LockFD:  int(s.notify.lock.Fd()),
		Manager: s.mgr.Socket(), WatchdogUS: s.mgr.watchdog.Microseconds(), Ready: s.mgr.ready,
		NextGen: s.nextGen, Restarts: s.restarts, Crashes: s.crashes, LastFailure: s.lastFailure}
	if execAt != nil {
		h.ExecAt = execAt.UnixNano()
	}
	h.Started = s.started.UnixNano()
	if s.ctl != nil {
		cfd, _ := s.ctl.fd()
		h.Control = &handedControl{Path: s.ctl.path, FD: cfd, Owned: s.ctl.owned}
	}
	if s.web != nil {
		mfd, _ := s.web.fd()
		h.Metrics = &handedMetrics{Addr: s.web.addr(), FD: mfd}
	}
	h.Totals = s.metrics.totals()
	for _, sk := range s.socks {
		h.Sockets = append(h.Sockets, handedSocket{Listen: sk.Listen, FD: sk.fd, Owned: sk.owned})
	}
	for _, in := range s.instances {
		h.Instances = append(h.Instances, handed(in))
	}
	for _, in := range s.ended {
		if in != s.strays {
			h.Ended = append(h.Ended, handed(in))
		}
	}
	for pid, sp := range s.seen {
		h.Seen = append(h.Seen, handedSeen{PID: pid, Start: sp.start, Gen: sp.owner.gen})
	}
	return h
}

// handed is an instance as the hand-over carries it.
func handed(in *instance) handedProcess {
	p := handedProcess{PID: in.pid, Main: in.main, Gen: in.gen, Phase: in.phase.String(),
		Since: in.since.UnixNano(), Status: in.status, Killed: in.killed, PIDGone: in.pidGone, Termed: in.termed}
	if !in.killAt.IsZero() {
		p.KillIn = max(int64(time.Until(in.killAt)), 1)
	}
	return p
}

// adoptProcess is an instance a previous image handed over, draining
// unless it served.
func adoptProcess(p handedProcess, now time.Time) *instance {
	in := &instance{pid: p.PID, main: p.Main, gen: p.Gen, phase: phaseDraining, since: time.Unix(0, p.Since),
		status: p.Status, killed: p.Killed, pidGone: p.PIDGone, termed: p.Termed}
	if p.KillIn > 0 {
		in.killAt = now.Add(time.Duration(p.KillIn))
	}
	if p.Phase == phaseServing.String() {
		in.phase = phaseServing
	}
	return in
}

// adoptProcesses takes the instances, the ended ones and the last census
// a previous image handed over.
func (s *Supervisor) adoptProcesses(h *handOver, now time.Time) {
	byGen := map[int]*instance{}
	for _, p := range h.Instances {
		in := adoptProcess(p, now)
		if in.phase == phaseServing {
			s.serving = in
		}
		s.instances = append(s.instances, in)
		byGen[in.gen] = in
	}
	for _, p := range h.Ended {
		in := adoptProcess(p, now)
		s.ended = append(s.ended, in)
		byGen[in.gen] = in
	}
	s.seen = map[int]seenProc{}
	for _, p := range h.Seen {
		owner := byGen[p.Gen]
		if owner == nil {
			owner = s.strays
		}
		s.seen[p.PID] = seenProc{start: p.Start, owner: owner}
	}
}

// decodeHandOver parses the state and checks its version.
func decodeHandOver(state string) (*handOver, error) {
	var h handOver
	if err := json.Unmarshal([]byte(state), &h); err != nil {
		return nil, fmt.Errorf("%s: %w", stateEnv, err)
	}
	if h.V != stateVersion {
		return nil, fmt.Errorf("%s: hand-over version %d, this build reads %d", stateEnv, h.V, stateVersion)
	}
	return &h, nil
}

// CheckRun reports whether this process is the check run of a
// self-upgrade (the previous image runs it before it execs this binary
// in its place) and, if so, whether this binary can take over: cfg is
// valid and the state decodes. The caller exits at once, 0 on success.
func CheckRun(cfg Config) (bool, error) {
	if os.Getenv(checkEnv) != "1" {
		return false, nil
	}
	if err := cfg.check(); err != nil {
		return true, fmt.Errorf("tcpgrace run: %w", err)
	}
	_, err := decodeHandOver(os.Getenv(stateEnv))
	return true, err
}

// adopt takes over from the previous image of this process.
// adoptSockets takes the listening sockets a previous image handed over.
func (s *Supervisor) adoptSockets(socks []handedSocket) error {
	for _, hs := range socks {
		sk, err := adoptSocket(hs.Listen, hs.FD)
		if err != nil {
			return err
		}
		sk.owned = hs.Owned
		s.socks = append(s.socks, sk)
	}
	return nil
}

func (s *Supervisor) adopt(state string) error {
	h, err := decodeHandOver(state)
	if err != nil {
		return err
	}
	if err := s.adoptSockets(h.Sockets); err != nil {
		return err
	}
	if s.notify, err = adoptNotifySocket(h.NotifyDir, h.NotifyFD, h.LockFD, s.log); err != nil {
		return err
	}
	if err := s.adoptControl(h.Control); err != nil {
		return err
	}
	s.started = time.Unix(0, h.Started)
	if h.Totals == nil { // from an image that did not count them
		h.Totals = &runTotals{Restarts: uint64(max(h.Restarts, 0))}
	}
	s.metrics = newRunMetrics(s.started, h.Totals)
	if err := s.adoptMetrics(h.Metrics); err != nil {
		return err
	}
	s.mgr = &manager{Sender: sdnotify.NewSender(h.Manager), watchdog: time.Duration(h.WatchdogUS) * time.Microsecond, ready: h.Ready}
	s.nextGen, s.restarts, s.crashes, s.lastFailure = h.NextGen, h.Restarts, h.Crashes, h.LastFailure
	s.everReady = true // a self-upgrade needs a serving instance: the start limit is over
	for _, name := range h.Signals {
		if sig := unix.SignalNum(name); sig == unix.SIGUSR1 {
			s.carried = append(s.carried, sig)
		}
	}
	now := time.Now()
	s.adoptProcesses(h, now)
	args := []any{"version", s.cfg.Version, "from_version", h.Version, "instances", len(s.instances)}
	if h.ExecAt > 0 {
		args = append(args, "exec_took", now.Sub(time.Unix(0, h.ExecAt)).Round(time.Microsecond))
	}
	s.log.Info("supervisor upgraded in place", args...)
	return nil
}

// adoptMetrics takes the metrics socket the previous image passed on,
// or binds one if it had none and this image has -metrics.
func (s *Supervisor) adoptMetrics(hm *handedMetrics) error {
	var ln *net.TCPListener
	var err error
	switch {
	case hm != nil:
		ln, err = adoptMetrics(hm.Addr, hm.FD)
	case s.cfg.Metrics != "":
		ln, err = bindMetrics(s.cfg.Metrics)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if s.cfg.Metrics == "" {
		s.log.Warn("this image has no -metrics: closing the metrics socket the previous image had", "addr", hm.Addr)
		ln.Close()
		return nil
	}
	s.web = newMetricsServer(ln, s.metrics.write, s.log)
	return nil
}

// adoptControl takes the control socket the previous image passed on.
func (s *Supervisor) adoptControl(hc *handedControl) error {
	if hc == nil {
		if s.cfg.Control != "" {
			s.log.Warn("the previous image had no control socket: -control takes effect at the next start",
				"control", s.cfg.Control)
		}
		return nil
	}
	f := os.NewFile(uintptr(hc.FD), "control")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("-control %s: inherited fd %d: %w", hc.Path, hc.FD, err)
	}
	s.ctl = newControlSocket(s, hc.Path, ln, hc.Owned)
	return nil
}
