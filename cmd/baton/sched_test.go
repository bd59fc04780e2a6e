package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/sched"
	"golang.org/x/sys/unix"
)

// threadSlices is the time slice of every thread of process pid, as
// sched_getattr reports it.
func threadSlices(t *testing.T, pid int) map[int]uint64 {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint64{}
	for _, e := range tasks {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err == unix.ESRCH { // ended meanwhile
			continue
		}
		if err != nil {
			t.Fatalf("thread %d of %d: %v", tid, pid, err)
		}
		out[tid] = a.Runtime
	}
	return out
}

// baton run asks for a short time slice for its own threads, to answer
// a trigger soon on a busy machine, and starts every generation with the
// kernel's default one: its programs run as they would without baton.
func TestRun_shortSliceForBatonDefaultForPrograms(t *testing.T) {
	self, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	def := self.Runtime
	if def == 0 {
		t.Skip("the kernel reports no time slice (custom slices came with Linux 6.12)")
	}
	if def <= uint64(sched.Slice) {
		t.Skipf("the test began with a slice of %d ns already", def)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(`watch { enabled = false }`+fakeBlock("app", "serve", "")), 0o644)
	baton := startBaton(t, "run", "-config", cfg)
	check := func(gen int, ready string) {
		t.Helper()
		baton.WaitOutput(fmt.Sprintf(ready+"program=app gen=%d ", gen), waitLong)
		pids := childPIDs(baton.Output())
		if len(pids) != gen {
			t.Fatalf("want %d generations started, have %d:\n%s", gen, len(pids), baton.Output())
		}
		for tid, s := range threadSlices(t, baton.Cmd.Process.Pid) {
			if s != uint64(sched.Slice) {
				t.Errorf("baton's thread %d: slice %d ns, want %d", tid, s, sched.Slice)
			}
		}
		for tid, s := range threadSlices(t, pids[gen-1]) {
			if s != def {
				t.Errorf("generation %d's thread %d: slice %d ns, want the kernel's default %d", gen, tid, s, def)
			}
		}
	}
	check(1, "ready: ")
	baton.Signal(syscall.SIGHUP)
	check(2, "handover: new generation ready, stopping the old one: ")
	baton.Signal(syscall.SIGTERM)
	baton.Wait(waitLong)
}
