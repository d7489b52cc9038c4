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

// procInfo is what /proc/PID/stat says of one process.
type procInfo struct {
	pid, ppid, pgid, sid int
	start                uint64 // clock ticks after boot; with pid, names one process
}

// readProc reads /proc/PID/stat; false if the process is gone.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// pid (comm) state ppid pgrp session ... starttime is field 22; comm
	// may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	p := procInfo{pid: pid}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgid, _ = strconv.Atoi(f[2])
	p.sid, _ = strconv.Atoi(f[3])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// allProcs reads every process in /proc.
func allProcs() []procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []procInfo
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			if p, ok := readProc(pid); ok {
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
func below(root int) map[int][]procInfo {
	kids := map[int][]procInfo{}
	if _, err := os.Stat("/proc/" + strconv.Itoa(root) + "/task/" + strconv.Itoa(root) + "/children"); err != nil {
		for _, p := range allProcs() {
			if p.pid != root {
				kids[p.ppid] = append(kids[p.ppid], p)
			}
		}
		return kids
	}
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[0]
		todo = todo[1:]
		for _, c := range childrenOf(pid) {
			if p, ok := readProc(c); ok && p.ppid == pid {
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
func (s *Supervisor) census() map[*instance][]procInfo {
	self := os.Getpid()
	kids := below(self)
	seen := map[int]seenProc{}
	out := map[*instance][]procInfo{}
	var walk func(p procInfo, owner *instance)
	walk = func(p procInfo, owner *instance) {
		seen[p.pid] = seenProc{p.start, owner}
		out[owner] = append(out[owner], p)
		for _, c := range kids[p.pid] {
			walk(c, owner)
		}
	}
	for _, c := range kids[self] {
		owner := s.attribute(c)
		if owner == s.strays && s.seen[c.pid] != (seenProc{c.start, s.strays}) {
			s.log.Warn("an orphan of no known instance: it is stopped when the supervisor stops", "process", c.pid)
		}
		walk(c, owner)
	}
	s.seen = seen
	return out
}

// attribute is the instance that c, a child of the supervisor, belongs
// to; s.strays if none is known.
func (s *Supervisor) attribute(c procInfo) *instance {
	for _, in := range s.instances {
		if c.pid == in.main || (c.pid == in.pid && !in.pidGone) {
			return in
		}
	}
	known := slices.Concat(s.instances, s.ended)
	if sp, ok := s.seen[c.pid]; ok && sp.start == c.start && (sp.owner == s.strays || slices.Contains(known, sp.owner)) {
		return sp.owner
	}
	for _, in := range known {
		if in.pid > 1 && (c.pgid == in.pid || c.sid == in.pid) {
			return in
		}
	}
	if lp := listenPIDOf(c.pid); lp > 1 {
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
func signalProcs(in *instance, procs []procInfo, sig unix.Signal) {
	group := false
	for _, p := range procs {
		group = group || (in.pid > 1 && p.pgid == in.pid)
		unix.Kill(p.pid, sig)
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

func pidsOf(procs []procInfo) []int {
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.pid
	}
	return pids
}
