package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Stat is what /proc/PID/stat says of one process.
type Stat struct {
	PID, PPID, PGID, SID int
	State                byte   // 'R' running, 'S' sleeping, 'Z' zombie, ... (proc(5))
	Start                uint64 // clock ticks after boot; with PID, names one process
}

// ReadStat reads /proc/PID/stat; false if the process is gone (or the
// file cannot be read or parsed).
func ReadStat(pid int) (Stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	return parseStat(pid, b)
}

// parseStat parses the contents of /proc/PID/stat: pid (comm) state ppid
// pgrp session ..., starttime being field 22; comm may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func parseStat(pid int, b []byte) (Stat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return Stat{}, false
	}
	if c := f[0][0]; len(f[0]) != 1 || !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
		return Stat{}, false // the state is one letter
	}
	s := Stat{PID: pid, State: f[0][0]}
	var errs [4]error
	s.PPID, errs[0] = strconv.Atoi(f[1])
	s.PGID, errs[1] = strconv.Atoi(f[2])
	s.SID, errs[2] = strconv.Atoi(f[3])
	s.Start, errs[3] = strconv.ParseUint(f[19], 10, 64)
	for _, err := range errs {
		if err != nil {
			return Stat{}, false
		}
	}
	return s, true
}

// Alive reports whether pid runs: it exists and is not a zombie (exited,
// waiting to be reaped).
func Alive(pid int) bool {
	s, ok := ReadStat(pid)
	return ok && s.State != 'Z'
}
