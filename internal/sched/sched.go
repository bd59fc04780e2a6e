// Package sched keeps baton prompt on a busy machine, and keeps that to
// baton.
//
// A handover happens while the old generation serves, often with every
// CPU busy. baton's part of it is short (the trigger read, the config,
// the fork), but it is a chain of thread wake-ups, and each one waits
// until the scheduler lets the woken thread preempt a busy one. Since
// Linux 6.12 a thread of the fair class can ask for a shorter time slice
// (sched_setattr's sched_runtime): the scheduler gives it an earlier
// deadline, so it runs soon after it wakes, and has it for less time in
// a row. That suits a process that sleeps nearly always and must answer
// at once when it wakes. Prompt asks for the shortest slice the kernel
// grants (0.1 ms) for every thread of the process. Older kernels accept
// the request and ignore it.
//
// A child inherits the slice of the thread that forked it, and keeps it
// across exec. baton's programs and builds must start as they would
// without baton, so Fork starts them from a thread that has the kernel's
// default slice for the time of the fork.
package sched

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Slice is the time slice Prompt asks for: the shortest the kernel
// grants to the fair class.
const Slice = 100 * time.Microsecond

// prompted tells Fork that Prompt changed a thread of this process.
var prompted atomic.Bool

// Prompt asks for Slice on every thread of the process that runs in the
// normal class (SCHED_OTHER) with a longer slice. Threads started later
// inherit it from the thread that starts them. It changes neither the
// class nor the nice value, and needs no privilege.
func Prompt() error {
	// A thread started while the list is read may be a copy of one not
	// changed yet: read again until a pass changes nothing.
	for pass := 0; pass < 5; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			ok, err := setSlice(tid, Slice)
			if err == unix.ESRCH { // ended meanwhile
				continue
			}
			if err != nil {
				return err
			}
			changed = changed || ok
		}
		if !changed {
			return nil
		}
		prompted.Store(true)
	}
	return nil
}

// setSlice gives thread tid the slice d (0: the kernel's default) if it
// runs in the normal class, and reports whether that changed it. With d
// above 0 it only ever shortens the slice.
func setSlice(tid int, d time.Duration) (bool, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return false, err
	}
	if a.Policy != unix.SCHED_NORMAL || d > 0 && a.Runtime <= uint64(d) {
		return false, nil
	}
	a.Size = unix.SizeofSchedAttr
	a.Flags = 0
	a.Runtime = uint64(d)
	return true, unix.SchedSetAttr(tid, a, 0)
}

// Fork calls start, which forks a child (exec.Cmd.Start, syscall.Exec),
// from a thread that has the kernel's default slice meanwhile, so that the
// child starts with it and not with Prompt's. Without Prompt it only calls
// start.
func Fork(start func() error) error {
	if !prompted.Load() {
		return start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	changed, err := setSlice(tid, 0)
	if err != nil {
		return start() // the thread's slice is unknown: fork as is
	}
	defer func() {
		if changed {
			setSlice(tid, Slice)
		}
	}()
	return start()
}
