package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/execshim"
	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/procfs"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

func TestRun_serveThenStop(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	st := h.status("app")
	if st.State != control.StateRunning || st.Generation != 1 {
		t.Fatalf("status: want running gen 1, have %s gen %d", st.State, st.Generation)
	}
	if pid := get(t, h.sup.Addr("app", "http")); pid != st.PID {
		t.Fatalf("served by pid %d, status says %d", pid, st.PID)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: want nil, have %v", err)
	}
	if !gone(st.PID) {
		t.Fatalf("process group %d still has processes after Run returned", st.PID)
	}
}

// Handovers under keep-alive load: the socket never closes, the old
// generation drains, and not one request fails.
func TestHandover_noFailedRequestUnderLoad(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	addr := h.sup.Addr("app", "http")
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16, Get: true, Path: "/"})
	for gen := 2; gen <= 6; gen++ {
		n := load.Acked()
		if !load.WaitAcked(n+200, waitLong) {
			t.Fatalf("load stalled before handover to gen %d", gen)
		}
		if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
			t.Fatalf("handover to gen %d: %v", gen, err)
		}
		h.waitEvent("app", "exit", gen-1)
	}
	n := load.Acked()
	load.WaitAcked(n+200, waitLong)
	res := load.Stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	st := h.status("app")
	if st.Generation != 6 || st.Handovers != 5 {
		t.Fatalf("status: want gen 6 after 5 handovers, have gen %d, %d handovers", st.Generation, st.Handovers)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, 0 failed, 5 handovers", res.Requests)
}

// A new generation that crashes at start is rolled back: the serving one
// keeps serving, the log shows the child's own words, and a good one
// afterwards takes over.
func TestRollback_crashAtStart(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	addr := h.sup.Addr("app", "http")
	first := h.status("app").PID
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 8, Get: true, Path: "/"})

	h.write(fakeProgram("app", "crash", ""))
	_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Reload: want ErrRolledBack, have %v", err)
	}
	line := h.waitLog("rollback", 1)
	if !strings.Contains(h.log.String(), "cannot open the database: permission denied") {
		t.Fatalf("the rollback does not show the child's output: %s", line)
	}
	if pid := get(t, addr); pid != first {
		t.Fatalf("after the rollback pid %d serves, want the first generation %d", pid, first)
	}

	h.write(fakeProgram("app", "serve", ""))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatalf("a good generation after the rollback: %v", err)
	}
	h.waitEvent("app", "exit", 1) // until then gen 1 may still accept
	st := h.status("app")
	if st.Generation != 3 || get(t, addr) != st.PID || st.PID == first {
		t.Fatalf("want gen 3 serving, have gen %d pid %d (first %d)", st.Generation, st.PID, first)
	}
	res := load.Stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d requests failed: %v %v", res.FailedTotal(), res.Failed, res.Examples)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// A new generation that never says READY is killed at its ready timeout,
// with its process group.
func TestRollback_neverReady(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID

	h.write(fakeProgram("app", "never-ready", `ready { timeout = "300ms" }`))
	_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "not ready within 300ms") {
		t.Fatalf("Reload: want a rollback for the ready timeout, have %v", err)
	}
	h.waitEvent("app", "exit", 2)
	st := h.status("app")
	if st.PID != first || st.LastExit == nil || st.LastExit.Signal != "SIGKILL" || st.LastExit.Generation != 2 {
		t.Fatalf("want gen 1 serving and gen 2 killed, have %+v (last exit %+v)", st, st.LastExit)
	}
	if !strings.Contains(h.log.String(), "warming up forever") {
		t.Fatal("the rollback does not show the child's output")
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// READY that comes after the ready timeout changes nothing: the late
// generation was rolled back and the first one keeps serving.
func TestRollback_lateReadyIgnored(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	h.write(fakeProgram("app", "late-ready", `ready { timeout = "200ms" }
  env = { BATON_TEST_CHILD = "late-ready", FAKE_DELAY = "400ms" }`))
	// The env line above replaces fakeProgram's: HCL would reject two.
	h.write(strings.Replace(readFile(t, h.file), `env     = { BATON_TEST_CHILD = "late-ready" }`, "", 1))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Reload: want ErrRolledBack, have %v", err)
	}
	h.waitEvent("app", "exit", 2)
	if st := h.status("app"); st.PID != first || st.Generation != 1 {
		t.Fatalf("want gen 1 still current, have gen %d pid %d", st.Generation, st.PID)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A generation that ignores SIGTERM is killed after its stop timeout and
// its exit says so; when that happens while baton stops, Run says so too.
func TestStopTimeout_killsAndRecords(t *testing.T) {
	cfg := fakeProgram("app", "ignore-term", `stop { timeout = "300ms" }`)
	h := newHarness(t, cfg)
	h.waitEvent("app", "ready", 1)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	last := h.status("app").LastExit
	if last == nil || last.Generation != 1 || last.Signal != "SIGKILL" || !strings.Contains(last.Killed, "after SIGTERM") {
		t.Fatalf("exit of gen 1: want killed by SIGKILL after SIGTERM, have %+v", last)
	}
	if err := h.stop(); !errors.Is(err, ErrKilled) {
		t.Fatalf("Run: want ErrKilled, have %v", err)
	}
}

// Handover requests that arrive during a handover are merged into one
// more; none runs in parallel.
func TestHandover_requestsCoalesce(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	h.write(strings.Replace(fakeProgram("app", "serve", ""), `BATON_TEST_CHILD = "serve"`, `BATON_TEST_CHILD = "serve", FAKE_GATE = "`+gate+`"`, 1))

	var wg sync.WaitGroup
	errs := make([]error, 5)
	reload := func(i int) {
		defer wg.Done()
		_, errs[i] = h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
	}
	wg.Add(1)
	go reload(0)
	h.waitLog("starting: program=app gen=2", 1)
	for i := 1; i < 5; i++ {
		wg.Add(1)
		go reload(i)
	}
	h.waitLog("queued", 4)
	open := func() { // let one gated generation serve
		f, err := os.OpenFile(gate, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		f.Write([]byte{1})
		f.Close()
	}
	open()
	h.waitEvent("app", "ready", 2)
	open()
	h.waitEvent("app", "ready", 3)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reload %d: %v", i, err)
		}
	}
	if st := h.status("app"); st.Generation != 3 || st.Handovers != 2 {
		t.Fatalf("want 5 requests served by 2 handovers (gen 3), have gen %d after %d handovers", st.Generation, st.Handovers)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// The old generation exiting with an error after a handover is not a
// crash of the program: nothing restarts, the new one keeps serving.
func TestStaleExit_noRestart(t *testing.T) {
	cfg := strings.Replace(fakeProgram("app", "serve", ""), `BATON_TEST_CHILD = "serve"`, `BATON_TEST_CHILD = "serve", FAKE_EXIT = "1"`, 1)
	h := newHarness(t, cfg)
	h.waitEvent("app", "ready", 1)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	st := h.status("app")
	if st.LastExit.Code != 1 || st.Restarts != 0 || st.Generation != 2 || st.State != control.StateRunning {
		t.Fatalf("want gen 2 running, no restart, gen 1 exited 1; have %+v, last exit %+v", st, st.LastExit)
	}
	if get(t, h.sup.Addr("app", "http")) != st.PID {
		t.Fatal("gen 2 does not serve")
	}
	h.stop()
}

// An HTTP readiness check counts only answers from the new generation:
// while the old one serves the same socket, a new one that never serves
// is rolled back instead of taking over on the old one's answers.
func TestHTTPReady_onlyTheNewGenerationCounts(t *testing.T) {
	ready := `ready {
    http    = "/healthz"
    timeout = "1500ms"
  }`
	h := newHarness(t, fakeProgram("app", "http-only", ready))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	h.write(strings.Replace(fakeProgram("app", "http-only", ready), `BATON_TEST_CHILD = "http-only"`, `BATON_TEST_CHILD = "http-only", FAKE_DELAY = "1h"`, 1))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Reload: want a rollback, have %v", err)
	}
	if pid := get(t, h.sup.Addr("app", "http")); pid != first {
		t.Fatalf("pid %d serves, want the first generation %d", pid, first)
	}
	// A new generation that does serve passes the check.
	h.write(fakeProgram("app", "http-only", ready))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	if st := h.status("app"); st.Generation != 3 || get(t, h.sup.Addr("app", "http")) != st.PID {
		t.Fatalf("want gen 3 serving, have %+v", st)
	}
	h.stop()
}

// A generation's leftover processes die with its process group.
func TestGrandchild_diesWithTheGeneration(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "grandchild", ""))
	h.waitEvent("app", "ready", 1)
	line := h.waitLog("grandchild pid", 1)
	m := regexp.MustCompile(`grandchild pid (\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no pid in %q", line)
	}
	pid, _ := strconv.Atoi(m[1])
	if !procfs.Alive(pid) {
		t.Fatalf("grandchild %d is not running", pid)
	}
	h.write(fakeProgram("app", "serve", ""))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	// baton kills the group once the generation exited; the kernel ends
	// the grandchild soon after, not at once.
	if !proctest.WaitGone(pid, waitLong) {
		t.Fatalf("grandchild %d outlived its generation", pid)
	}
	h.stop()
}

// Passing the socket to a new generation never switches its shared file
// description to blocking mode under the generation that serves. The
// flag is read while the new generation waits at a gate before it takes
// the socket (its Go runtime would make the description non-blocking
// again), under load on the old one, which must drain without its
// listener close hanging.
func TestSockets_nonblockingFlagSurvivesHandovers(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	release, err := os.OpenFile(gate, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release.Close()
	gated := strings.Replace(fakeProgram("app", "serve", ""), `BATON_TEST_CHILD = "serve"`, fmt.Sprintf(`BATON_TEST_CHILD = "serve", FAKE_GATE = %q`, gate), 1)
	h := newHarness(t, gated)
	release.Write([]byte{1})
	h.waitEvent("app", "ready", 1)
	h.sup.pool.mu.Lock()
	s := h.sup.pool.byKey["127.0.0.1:0#app.http"]
	h.sup.pool.mu.Unlock()
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: h.sup.Addr("app", "http"), Clients: 8, Get: true, Path: "/"})
	for gen := 2; gen <= 3; gen++ {
		load.WaitAcked(load.Acked()+100, waitLong)
		done := make(chan error, 1)
		go func() {
			_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
			done <- err
		}()
		h.waitLog(fmt.Sprintf("starting: program=app gen=%d", gen), 1) // at the gate
		flags, err := fcntlFlags(s)
		if err != nil {
			t.Fatal(err)
		}
		if flags&syscall.O_NONBLOCK == 0 {
			t.Fatalf("starting gen %d switched the socket to blocking mode under gen %d", gen, gen-1)
		}
		load.WaitAcked(load.Acked()+100, waitLong) // gen-1 serves on
		release.Write([]byte{1})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		h.waitEvent("app", "exit", gen-1)
	}
	res := load.Stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v", res.FailedTotal(), res.Requests, res.Failed)
	}
	if strings.Contains(h.log.String(), "closing the listener timed out") {
		t.Fatal("a child's listener close hung")
	}
	h.stop()
}

func fcntlFlags(s *socket) (int, error) {
	raw, err := s.file.SyscallConn()
	if err != nil {
		return 0, err
	}
	var flags int
	var ferr error
	raw.Control(func(fd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		flags = int(r)
		if e != 0 {
			ferr = e
		}
	})
	return flags, ferr
}

// A config that does not validate changes nothing: the error carries the
// position, and the serving generation serves on.
func TestReload_invalidConfigChangesNothing(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	h.write(fakeProgram("app", "serve", `stop { timeout = "forever" }`))
	_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
	var cerr *config.Error
	if !errors.As(err, &cerr) || !strings.Contains(err.Error(), `config.hcl:6,20-29: Invalid duration`) {
		t.Fatalf("Reload: want a positioned ConfigError, have %v", err)
	}
	h.waitLog("config not applied", 1)
	if st := h.status("app"); st.PID != first || st.Generation != 1 {
		t.Fatalf("the invalid config changed something: %+v", st)
	}
	h.stop()
}

// Kill stops everything at once: every group gets SIGKILL, every child is
// reaped, and Run says a child had to be killed.
func TestKill_immediate(t *testing.T) {
	h := newHarness(t, fakeProgram("a", "ignore-term", "")+fakeProgram("b", "serve", `listener "x" { address = "127.0.0.1:0" }`))
	h.waitEvent("a", "ready", 1)
	h.waitEvent("b", "ready", 1)
	pa, pb := h.status("a").PID, h.status("b").PID
	h.sup.Kill()
	<-h.done
	if !errors.Is(h.err, ErrKilled) {
		t.Fatalf("Run: want ErrKilled, have %v", h.err)
	}
	if !gone(pa) || !gone(pb) {
		t.Fatal("a child survived Kill")
	}
}

// A binary that links baton's protocol (the child package) starts
// directly: it sets its own LISTEN_PID from BATON_LISTEN_PPID. Any other
// starts through /bin/sh, which sets LISTEN_PID, unless its environment
// has a name a shell would drop: then through baton's own binary, which
// passes it on. Every way, the program takes its socket (LISTEN_PID is
// its own pid), gets its environment and none of the shim's variables.
// The binary without the protocol is proctest.ForeignCopy's.
func TestStart_directOrThroughAShim(t *testing.T) {
	foreign := filepath.Join(t.TempDir(), "foreign")
	proctest.ForeignCopy(t, foreign)
	for _, tc := range []struct {
		name, binary, env, want, via string
	}{
		{"direct", os.Args[0], `PLAIN = "1"`, "PLAIN=1\n", "direct"},
		{"direct, any name", os.Args[0], `"spring.profiles.active" = "prod"`, "spring.profiles.active=prod\n", "direct"},
		{"shell", foreign, `PLAIN = "1"`, "PLAIN=1\n", "sh"},
		{"own binary", foreign, `"spring.profiles.active" = "prod"`, "spring.profiles.active=prod\n", "baton"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := strings.Replace(withEnv(fakeProgram("app", "serve", ""), "serve", tc.env), fmt.Sprintf("%q", os.Args[0]), fmt.Sprintf("%q", tc.binary), 1)
			h := newHarness(t, block)
			h.waitEvent("app", "ready", 1)
			h.waitLog("via="+tc.via, 1)
			env := proctest.Get(t, "http://"+h.sup.Addr("app", "http")+"/env")
			if !strings.Contains(env, tc.want) || strings.Contains(env, execshim.EnvMarker) || strings.Contains(env, protocol.EnvListenParent) {
				t.Fatalf("the program's environment:\n%s", env)
			}
			h.stop()
		})
	}
}
