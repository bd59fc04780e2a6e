package sched

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	proctest.Main(m, map[string]func() int{
		"prompt": promptChild,
		"block":  func() int { os.Stdin.Read(make([]byte, 1)); return 0 },
	})
}

// sliceOf is the time slice of thread tid, as sched_getattr reports it
// (0 on kernels before 6.12, which report none).
func sliceOf(tid int) (uint64, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	return a.Runtime, nil
}

// threadSlices is the slice of every thread of process pid.
func threadSlices(pid int) (map[int]uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	out := map[int]uint64{}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		s, err := sliceOf(tid)
		if err == unix.ESRCH { // ended meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		out[tid] = s
	}
	return out, nil
}

// promptChild is a process that calls Prompt and checks what it did: to
// its own threads, old and new, and to the children it forks with Fork
// and without. It prints "ok", "skip: why" or what went wrong.
func promptChild() int {
	fail := func(format string, args ...any) int {
		fmt.Printf(format+"\n", args...)
		return 1
	}
	def, err := sliceOf(0)
	if err != nil {
		return fail("sched_getattr: %v", err)
	}
	if def == 0 {
		fmt.Println("skip: the kernel reports no time slice (custom slices came with Linux 6.12)")
		return 0
	}
	if def <= uint64(Slice) {
		fmt.Printf("skip: the test process began with a slice of %d ns already\n", def)
		return 0
	}
	if err := Prompt(); err != nil {
		return fail("Prompt: %v", err)
	}
	// Threads started after Prompt: each locked goroutine needs one.
	release := make(chan struct{})
	started := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			started <- struct{}{}
			<-release
		}()
	}
	for range 4 {
		<-started
	}
	defer close(release)
	slices, err := threadSlices(os.Getpid())
	if err != nil {
		return fail("%v", err)
	}
	if len(slices) < 5 {
		return fail("only %d threads", len(slices))
	}
	for tid, s := range slices {
		if s != uint64(Slice) {
			return fail("thread %d of %d: slice %d ns after Prompt, want %d", tid, len(slices), s, Slice)
		}
	}

	child := func(fork bool) (uint64, error) {
		cmd := proctest.Self("block")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return 0, err
		}
		defer func() { stdin.Close(); cmd.Wait() }()
		if fork {
			err = Fork(cmd.Start)
		} else {
			err = cmd.Start()
		}
		if err != nil {
			return 0, err
		}
		return sliceOf(cmd.Process.Pid)
	}
	runtime.LockOSThread() // the thread Fork forks from, to check it after
	if s, err := child(true); err != nil || s != def {
		return fail("a child started by Fork: slice %d ns (%v), want the default %d", s, err, def)
	}
	if s, err := sliceOf(unix.Gettid()); err != nil || s != uint64(Slice) {
		return fail("the thread that forked: slice %d ns (%v) after Fork, want %d", s, err, Slice)
	}
	if s, err := child(false); err != nil || s != uint64(Slice) {
		return fail("a child started without Fork: slice %d ns (%v), want it inherited, %d", s, err, Slice)
	}
	fmt.Println("ok")
	return 0
}

// Prompt gives every thread of the process, and every thread it starts
// later, the short slice; a child started by Fork begins with the
// kernel's default one (and one started otherwise inherits the short
// slice, which shows the check can tell them apart).
func TestPrompt_threadsShortChildrenDefault(t *testing.T) {
	cmd := proctest.Self("prompt")
	out, err := cmd.CombinedOutput()
	got := strings.TrimSpace(string(out))
	if skip, ok := strings.CutPrefix(got, "skip: "); ok {
		t.Skip(skip)
	}
	if err != nil || got != "ok" {
		t.Fatalf("%v\n%s", err, got)
	}
}
