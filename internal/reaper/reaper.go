// Package reaper reaps the orphans the kernel hands to baton, as PID 1 of
// a PID namespace (a container) or as a child subreaper, without ever
// taking the exit status of one of baton's own children.
//
// baton's own children (generations, builds) are waited for by os/exec's
// Cmd.Wait, which needs their exit status. An orphan (a grandchild whose
// parent exited) becomes baton's child too, and nobody waits for it: it
// stays a zombie. Reaping "any child" (wait4(-1)) would take the status of
// an own child before its Cmd.Wait. So every own child is started through
// Start, which records its pid before anyone can reap, and the reaper
// waits only for zombie children whose pid it does not know, one pid at
// a time: waitid(P_ALL, WNOWAIT) to learn that some child is a zombie
// without reaping it, /proc to find which, wait4 on that pid alone.
package reaper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"github.com/baton-run/baton/internal/procfs"
	"golang.org/x/sys/unix"
)

// own holds the pids of baton's own children from their start until
// their Cmd.Wait returned. Start holds mu from fork to record, and the
// reaper holds it while it looks and reaps, so a child is never seen
// before it is recorded.
var own = struct {
	mu   sync.Mutex
	pids map[int]struct{}
}{pids: map[int]struct{}{}}

// Start starts cmd as one of baton's own children: the reaper leaves it
// to cmd.Wait. Call Forget with its pid once Wait returned.
func Start(cmd *exec.Cmd) error {
	own.mu.Lock()
	defer own.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	own.pids[cmd.Process.Pid] = struct{}{}
	return nil
}

// Adopt makes pid one of baton's own children without starting it: a
// child of the image of baton that an upgrade in place replaced, which
// is this process's child now. Call it before the reaper starts, and
// Forget once it was waited for.
func Adopt(pid int) {
	own.mu.Lock()
	defer own.mu.Unlock()
	own.pids[pid] = struct{}{}
}

// Forget ends what Start began, once the child was waited for.
func Forget(pid int) {
	own.mu.Lock()
	defer own.mu.Unlock()
	delete(own.pids, pid)
}

// CombinedOutput is exec.Cmd.CombinedOutput for an own child.
func CombinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := Start(cmd); err != nil {
		return nil, err
	}
	defer Forget(cmd.Process.Pid)
	err := cmd.Wait()
	return b.Bytes(), err
}

// Orphan is an orphan the reaper waited for.
type Orphan struct {
	PID    int
	Status syscall.WaitStatus
}

func (o Orphan) String() string {
	switch {
	case o.Status.Signaled():
		return fmt.Sprintf("pid %d killed by %v", o.PID, o.Status.Signal())
	default:
		return fmt.Sprintf("pid %d exit status %d", o.PID, o.Status.ExitStatus())
	}
}

// Reaper waits for orphans on every SIGCHLD until Stop.
type Reaper struct {
	sigs   chan os.Signal
	stop   chan struct{}
	done   chan struct{}
	reaped func(Orphan)
}

// New starts a reaper; reaped is told of each orphan it waited for, on
// the reaper's goroutine.
func New(reaped func(Orphan)) *Reaper {
	r := &Reaper{sigs: make(chan os.Signal, 1), stop: make(chan struct{}), done: make(chan struct{}), reaped: reaped}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.run()
	return r
}

func (r *Reaper) run() {
	defer close(r.done)
	r.reapZombies() // orphans that exited before the reaper started
	for {
		select {
		case <-r.sigs:
			r.reapZombies()
		case <-r.stop:
			return
		}
	}
}

// Stop ends the reaper: SIGCHLD is no longer watched. It then kills the
// orphans still alive (processes that left their generation's process
// group, which the generation's end did not kill) and waits for them,
// so that baton leaves nothing behind. It returns how many it killed.
func (r *Reaper) Stop() int {
	signal.Stop(r.sigs)
	close(r.stop)
	<-r.done
	own.mu.Lock()
	defer own.mu.Unlock()
	n := 0
	// The children of a killed orphan become orphans in turn: go on
	// until none is left.
	for round := 0; round < 100; round++ {
		var left []int
		for _, c := range children() {
			if _, mine := own.pids[c.PID]; !mine {
				left = append(left, c.PID)
				if c.State != 'Z' {
					syscall.Kill(c.PID, syscall.SIGKILL)
					n++
				}
			}
		}
		if len(left) == 0 {
			break
		}
		for _, pid := range left {
			r.wait(pid, 0)
		}
	}
	return n
}

// reapZombies waits for every zombie child that is not baton's own.
func (r *Reaper) reapZombies() {
	own.mu.Lock()
	defer own.mu.Unlock()
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err != nil || info.Signo == 0 {
		return // no child, or none has exited
	}
	for _, c := range children() {
		if _, mine := own.pids[c.PID]; mine || c.State != 'Z' {
			continue
		}
		r.wait(c.PID, unix.WNOHANG)
	}
}

// wait waits for orphan pid alone, and tells of it.
func (r *Reaper) wait(pid, options int) {
	var ws syscall.WaitStatus
	for {
		got, err := syscall.Wait4(pid, &ws, options, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err == nil && got == pid && r.reaped != nil {
			r.reaped(Orphan{PID: pid, Status: ws})
		}
		return
	}
}

// children lists this process's children from /proc, zombies included.
func children() []procfs.Stat {
	self := os.Getpid()
	all, _ := procfs.All()
	var out []procfs.Stat
	for _, st := range all {
		if st.PPID == self {
			out = append(out, st)
		}
	}
	return out
}

// SetSubreaper makes this process the child subreaper of its
// descendants (PR_SET_CHILD_SUBREAPER): an orphan among them becomes its
// child instead of init's.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
