// Package procfs reads what baton and its tools need of a process from
// Linux's /proc/PID/stat (proc(5)): its state, parent, process group,
// CPU times and resident memory.
package procfs

import (
	"bytes"
	"errors"
	"os"
	"strconv"
)

// Stat is a process's line of /proc/PID/stat, the fields baton reads.
type Stat struct {
	PID   int
	State byte // R, S, D, Z (zombie), X (dead), …
	PPID  int
	PGRP  int
	// CPU times in clock ticks (USER_HZ): the process's own, and those of
	// the children it waited for.
	UTime, STime, CUTime, CSTime int64
	RSS                          int64 // resident pages
}

// Exited reports whether the process no longer runs: a zombie not yet
// waited for, or dead.
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// Ticks is the CPU time of the process and of the children it waited
// for, in clock ticks.
func (s Stat) Ticks() int64 { return s.UTime + s.STime + s.CUTime + s.CSTime }

// Read reads the stat of process pid.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parse(b)
}

// Alive reports whether process pid exists and runs (a zombie does not).
func Alive(pid int) bool {
	st, err := Read(pid)
	return err == nil && !st.Exited()
}

// All returns the stat of every process, leaving out those that ended
// while /proc was read.
func All() ([]Stat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make([]Stat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := Read(pid); err == nil {
			out = append(out, st)
		}
	}
	return out, nil
}

var errMalformed = errors.New("procfs: malformed stat line")

// parse reads "pid (comm) state ppid pgrp …": comm may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parse(b []byte) (Stat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return Stat{}, errMalformed
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return Stat{}, errMalformed
	}
	f := bytes.Fields(b[end+1:])
	// state ppid pgrp session tty tpgid flags minflt cminflt majflt
	// cmajflt utime stime cutime cstime priority nice threads itrealvalue
	// starttime vsize rss
	if len(f) < 22 || len(f[0]) != 1 {
		return Stat{}, errMalformed
	}
	st := Stat{PID: pid, State: f[0][0]}
	ints := []*int{&st.PPID, &st.PGRP}
	for i, p := range ints {
		if *p, err = strconv.Atoi(string(f[1+i])); err != nil {
			return Stat{}, errMalformed
		}
	}
	longs := []struct {
		field int
		p     *int64
	}{{11, &st.UTime}, {12, &st.STime}, {13, &st.CUTime}, {14, &st.CSTime}, {21, &st.RSS}}
	for _, l := range longs {
		if *l.p, err = strconv.ParseInt(string(f[l.field]), 10, 64); err != nil {
			return Stat{}, errMalformed
		}
	}
	return st, nil
}
