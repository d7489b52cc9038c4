//go:build linux

package supervisor

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/proc"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// An instance's processes are its first process, every descendant of it,
// and the orphans among them that were re-parented to the supervisor (the
// subreaper) when their parent died. Nothing but /proc tells which
// orphan came from which instance (cgroups are not available in
// general), so a census walks the supervisor's subtree whenever a child
// of it is reaped, an instance becomes ready or names a MAINPID=, and
// when a stop or a kill needs the members; each process is attributed:
//
//  1. below a live instance's first or main process: that instance;
//  2. an orphan seen by an earlier census (same pid and start time): the
//     instance it was attributed to then;
//  3. an orphan in the session or process group an instance leads (each
//     instance is started in a session of its own): that instance;
//  4. an orphan whose environment still names an instance in LISTEN_PID
//     (a forked worker keeps its parent's environment block): that one.
//
// Descendants of an orphan belong where it does. An orphan none of these
// place (it left the session and the environment, and its parent died
// before any census saw it) belongs to no known instance: it is stopped
// only when the supervisor stops.

// allProcs reads every process in /proc.
func allProcs() []proc.Stat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []proc.Stat
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			if p, ok := proc.ReadStat(pid); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// below lists the processes below root (root excluded), by their
// parent's pid, walking the children files of each task of each process
// (CONFIG_PROC_CHILDREN), which costs what the subtree holds; where the
// kernel has none it reads every process in /proc.
func below(root int) map[int][]proc.Stat {
	kids := map[int][]proc.Stat{}
	if _, err := os.Stat("/proc/" + strconv.Itoa(root) + "/task/" + strconv.Itoa(root) + "/children"); err != nil {
		for _, p := range allProcs() {
			if p.PID != root {
				kids[p.PPID] = append(kids[p.PPID], p)
			}
		}
		return kids
	}
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[0]
		todo = todo[1:]
		for _, c := range childrenOf(pid) {
			if p, ok := proc.ReadStat(c); ok && p.PPID == pid {
				kids[pid] = append(kids[pid], p)
				todo = append(todo, c)
			}
		}
	}
	return kids
}

// childrenOf lists the children of every task of pid.
func childrenOf(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, _ := os.ReadDir(dir)
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile(dir + task.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// listenPIDOf is LISTEN_PID in the environment pid was started with (0
// if none or unreadable).
func listenPIDOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return 0
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(wire.EnvListenPID+"=")); ok {
			n, _ := strconv.Atoi(string(v))
			return n
		}
	}
	return 0
}

// seenProc is a process a census attributed.
type seenProc struct {
	start uint64
	owner *instance // s.strays: no known instance
}

// census attributes every process below the supervisor to an instance
// (live, or ended with processes left) or to s.strays, and remembers the
// attribution for the next census. It returns the processes per owner.
func (s *Supervisor) census() map[*instance][]proc.Stat {
	self := os.Getpid()
	kids := below(self)
	seen := map[int]seenProc{}
	out := map[*instance][]proc.Stat{}
	var walk func(p proc.Stat, owner *instance)
	walk = func(p proc.Stat, owner *instance) {
		seen[p.PID] = seenProc{p.Start, owner}
		out[owner] = append(out[owner], p)
		for _, c := range kids[p.PID] {
			walk(c, owner)
		}
	}
	for _, c := range kids[self] {
		owner := s.attribute(c)
		if owner == s.strays && s.seen[c.PID] != (seenProc{c.Start, s.strays}) {
			s.log.Warn("an orphan of no known instance: it is stopped when the supervisor stops", "process", c.PID)
		}
		walk(c, owner)
	}
	s.seen = seen
	return out
}

// ofInstance reports whether pid is a process of in. The census reads
// the process tree one /proc children file at a time, and may miss a
// process that is being re-parented meanwhile: the usual case for the
// MAINPID= of a server's own upgrade, sent by an old generation that
// exits right after, its child then moving to the supervisor. So pid
// itself is read again: as a child of one of in's processes, or as the
// supervisor's child that attribute gives to in, it is in's.
func (s *Supervisor) ofInstance(in *instance, pid int) bool {
	procs := s.census()[in]
	if slices.ContainsFunc(procs, func(p proc.Stat) bool { return p.PID == pid }) {
		return true
	}
	p, ok := proc.ReadStat(pid)
	if !ok {
		return false
	}
	if p.PPID == os.Getpid() {
		return s.attribute(p) == in
	}
	return slices.ContainsFunc(procs, func(q proc.Stat) bool { return q.PID == p.PPID })
}

// attribute is the instance that c, a child of the supervisor, belongs
// to; s.strays if none is known.
func (s *Supervisor) attribute(c proc.Stat) *instance {
	for _, in := range s.instances {
		if c.PID == in.main || (c.PID == in.pid && !in.pidGone) {
			return in
		}
	}
	known := slices.Concat(s.instances, s.ended)
	if sp, ok := s.seen[c.PID]; ok && sp.start == c.Start && (sp.owner == s.strays || slices.Contains(known, sp.owner)) {
		return sp.owner
	}
	for _, in := range known {
		if in.pid > 1 && (c.PGID == in.pid || c.SID == in.pid) {
			return in
		}
	}
	if lp := listenPIDOf(c.PID); lp > 1 {
		for _, in := range known {
			if in.pid == lp {
				return in
			}
		}
	}
	return s.strays
}

// signalProcs sends sig to procs, the processes of in, and to the
// process group in leads if one of them is in it (so that a child forked
// since the census is not missed).
func signalProcs(in *instance, procs []proc.Stat, sig unix.Signal) {
	group := false
	for _, p := range procs {
		group = group || (in.pid > 1 && p.PGID == in.pid)
		unix.Kill(p.PID, sig)
	}
	if group {
		unix.Kill(-in.pid, sig)
	}
}

// kill sends SIGKILL to every process of a live instance: its process
// group, its main process, and what the census finds of it elsewhere.
func (s *Supervisor) kill(in *instance) {
	in.kill()
	signalProcs(in, s.census()[in], unix.SIGKILL)
}

// end records that in's first and main processes are gone: whatever
// else of it runs is stopped at the next sweep, at once with SIGKILL if
// it never became ready or was killed already, else with SIGTERM and, at
// the stop timeout, SIGKILL.
func (s *Supervisor) end(in *instance) {
	in.killAt, in.termed = time.Time{}, false
	if in.phase != phaseStarting && !in.killed {
		in.killAt = time.Now().Add(s.cfg.StopTimeout)
	}
	s.ended = append(s.ended, in)
}

// sweep takes a census and stops what is left of the ended instances
// (and of the strays, once stopping with no instance left); an ended
// instance with nothing left is forgotten.
func (s *Supervisor) sweep() {
	procs := s.census()
	if s.stopping && len(s.instances) == 0 && len(procs[s.strays]) > 0 && !slices.Contains(s.ended, s.strays) {
		s.strays.phase, s.strays.killAt = phaseDraining, time.Now().Add(s.cfg.StopTimeout)
		s.ended = append(s.ended, s.strays)
	}
	now := time.Now()
	s.ended = slices.DeleteFunc(s.ended, func(in *instance) bool {
		left := procs[in]
		if len(left) == 0 {
			return true
		}
		sig, wasKilled := unix.SIGTERM, in.killed
		switch {
		case in.killed || !now.Before(in.killAt):
			sig, in.killed = unix.SIGKILL, true
		case in.termed:
			return false
		}
		if !in.termed || !wasKilled {
			s.log.Info("stopping what is left of an ended instance", "instance", in.main, "generation", in.gen,
				"processes", pidsOf(left), "signal", unix.SignalName(sig))
		}
		in.termed = true
		signalProcs(in, left, sig)
		return false
	})
}

func pidsOf(procs []proc.Stat) []int {
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.PID
	}
	return pids
}
