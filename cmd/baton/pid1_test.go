package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/procfs"
	"github.com/baton-run/baton/internal/proctest"
)

// startPID1 runs "baton run -config cfg" as PID 1 of a new PID namespace
// (unshare --pid --fork --mount-proc, as root), and returns the unshare
// process, whose exit status is baton's, and baton's pid outside the
// namespace. It skips where a PID namespace cannot be made.
func startPID1(t *testing.T, cfg string) (*proctest.Proc, int) {
	t.Helper()
	unshare := proctest.RequireTool(t, "unshare")
	if os.Getuid() != 0 {
		if os.Getenv("BATON_REQUIRE_ROOT") != "" {
			t.Fatal("BATON_REQUIRE_ROOT is set, and this test does not run as root")
		}
		t.Skip("a PID namespace needs root")
	}
	if out, err := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here (a container without CAP_SYS_ADMIN?): %v: %s", err, out)
	}
	argv, sel := proctest.SelfArgv("baton")
	cmd := exec.Command(unshare, append([]string{"--pid", "--fork", "--mount-proc"}, append(argv, "run", "-config", cfg)...)...)
	cmd.Env = append(os.Environ(), sel)
	p := proctest.Start(t, cmd)
	p.WaitOutput("baton is PID 1", waitLong)
	pid := childOf(t, cmd.Process.Pid)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // the namespace dies with it
	return p, pid
}

// childOf returns the pid of the one child of process parent.
func childOf(t *testing.T, parent int) int {
	t.Helper()
	all, _ := procfs.All()
	for _, st := range all {
		if st.PPID == parent {
			return st.PID
		}
	}
	t.Fatalf("process %d has no child", parent)
	return 0
}

func orphansConfig(t *testing.T, extra string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.hcl")
	block := strings.Replace(fakeBlock("app", "orphans", extra), `BATON_TEST_CHILD = "orphans"`, `BATON_TEST_CHILD = "orphans", FAKE_ORPHANS = "10"`, 1)
	os.WriteFile(cfg, []byte(block), 0o644)
	return cfg
}

// As PID 1 of a PID namespace (a container's entrypoint), baton reaps
// every orphan its programs leave (10 per generation here, each exiting
// 7) while it hands over twice, and never takes the exit status of a
// generation: each is recorded as exit status 0. SIGUSR1 is ignored,
// not fatal. SIGTERM drains every program, and baton exits 0.
func TestPID1_reapsOrphansDrainsAndExits(t *testing.T) {
	p, pid := startPID1(t, orphansConfig(t, ""))
	p.WaitOutput("ready: program=app gen=1", waitLong)
	for gen := 2; gen <= 3; gen++ {
		syscall.Kill(pid, syscall.SIGHUP)
		if _, ok := p.Out.Wait("handover: new generation ready", gen-1, waitLong); !ok {
			t.Fatalf("handover %d did not complete; log:\n%s", gen-1, p.Output())
		}
	}
	if _, ok := p.Out.Wait("reaped an orphan", 30, waitLong); !ok {
		t.Fatalf("want 30 orphans reaped; log:\n%s", p.Output())
	}
	syscall.Kill(pid, syscall.SIGUSR1)
	p.WaitOutput("signal ignored", waitLong)

	syscall.Kill(pid, syscall.SIGTERM)
	if code, sig := exitStatus(p.Wait(waitLong)); code != 0 {
		t.Fatalf("baton as PID 1: want exit 0, have %d %s; log:\n%s", code, sig, p.Output())
	}
	out := p.Output()
	if n := strings.Count(out, "reaped an orphan"); n != 30 || strings.Count(out, "exit status 7") != 30 {
		t.Errorf("want 30 orphans reaped, each once with exit status 7; have %d; log:\n%s", n, out)
	}
	for gen := 1; gen <= 3; gen++ {
		line, ok := p.Out.Wait(fmt.Sprintf("generation exited: program=app gen=%d ", gen), 1, 0)
		if !ok || !strings.Contains(line, `status="exit status 0"`) {
			t.Errorf("gen %d: want its exit recorded as exit status 0 (drained), have %q", gen, line)
		}
	}
	if !strings.Contains(out, "drained") {
		t.Errorf("want the program to drain at SIGTERM; log:\n%s", out)
	}
}

// As PID 1, a program that had to be killed at the stop makes baton, and
// so the container, exit 3.
func TestPID1_exitStatusSaysAChildWasKilled(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.hcl")
	os.WriteFile(cfg, []byte(fakeBlock("app", "ignore-term", `stop { timeout = "300ms" }`)), 0o644)
	p, pid := startPID1(t, cfg)
	p.WaitOutput("ready: program=app gen=1", waitLong)
	syscall.Kill(pid, syscall.SIGTERM)
	if code, sig := exitStatus(p.Wait(waitLong)); code != exitKilled {
		t.Fatalf("want exit %d, have %d %s; log:\n%s", exitKilled, code, sig, p.Output())
	}
}

// Outside PID 1, baton is the child subreaper of its programs: their
// orphans become its children, and it reaps them; without it they would
// go to init.
func TestSubreaper_orphansOfProgramsReaped(t *testing.T) {
	baton := startBaton(t, "run", "-config", orphansConfig(t, ""))
	baton.WaitOutput("ready: program=app gen=1", waitLong)
	if _, ok := baton.Out.Wait("reaped an orphan", 10, waitLong); !ok {
		t.Fatalf("want 10 orphans reaped by baton; log:\n%s", baton.Output())
	}
	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("want exit 0, have %d; log:\n%s", code, baton.Output())
	}
	if !strings.Contains(baton.Output(), `status="exit status 0"`) {
		t.Fatalf("want gen 1 recorded as exit status 0; log:\n%s", baton.Output())
	}
}
