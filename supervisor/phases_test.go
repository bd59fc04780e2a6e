package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/control"
)

// A config save while a program waits out its restart backoff leaves the
// backoff running: the save of an unchanged program is not a reason to
// give up restarting it.
func TestBackoff_configSaveKeepsTheRestart(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `restart {
    backoff     = "1h"
    max_backoff = "1h"
  }`))
	h.waitEvent("app", "ready", 1)
	syscall.Kill(h.status("app").PID, syscall.SIGKILL)
	h.waitLog("restarting after a backoff", 1)
	if st := h.status("app"); st.State != control.StateBackoff {
		t.Fatalf("want backoff after the crash, have %+v", st)
	}
	// What the watcher does on a save of config.hcl.
	h.sup.Reload(context.Background(), ReloadRequest{Reason: "config file changed"})
	if st := h.status("app"); st.State != control.StateBackoff || st.RestartIn <= 0 {
		t.Fatalf("a config save ended the backoff: want state backoff, have %+v", st)
	}
	// An explicit reload starts it at once.
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	if st := h.status("app"); st.State != control.StateRunning || st.Generation != 2 {
		t.Fatalf("want gen 2 running after the reload, have %+v", st)
	}
	h.stop()
}

// A READY that comes after the stop signal (here the end of the ready
// delay of a program that ignores SIGTERM) does not bring the generation
// back: the stop timeout kills it, Stop returns, and Start works again.
func TestStop_readyAfterTheStopSignalIsIgnored(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "mute-ignore-term", `ready { delay = "2s" }
  stop  { timeout = "4s" }`))
	h.waitLog("fake: ignoring SIGTERM", 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := h.sup.StopProgram(ctx, "app"); err != nil {
		t.Fatalf("Stop during the ready delay: %v; log:\n%s", err, h.log)
	}
	st := h.status("app")
	if st.State != control.StateStopped || st.LastExit == nil || st.LastExit.Signal != "SIGKILL" {
		t.Fatalf("want stopped, killed at the stop timeout; have %+v, last exit %+v", st, st.LastExit)
	}
	if st.Handovers != 0 || st.Generation != 0 {
		t.Fatalf("the stopped generation was counted as serving: %+v", st)
	}
	if res, err := h.sup.StartProgram(context.Background(), "app"); err != nil || res.Generation != 2 {
		t.Fatalf("Start after the stop: %+v %v", res, err)
	}
	h.stop()
}

// baton dev: a build queued behind a slow start-up is not deleted when
// the build before it becomes ready: it starts, serves, and its binary
// stays on disk for the next reload.
func TestDev_queuedBuildKeepsItsBinary(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main"), 0o644)
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	// Held open for writing, so that each generation's open returns and
	// its read waits for the byte the test writes.
	release, err := os.OpenFile(gate, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release.Close()
	argv, _ := proctest.SelfArgv("")
	h := newHarnessWith(t, fmt.Sprintf(`
watch { debounce = "50ms" }
program "app" {
  command = ["./bin/app"]
  env     = { FAKE_GATE = %q }
  listener "http" { address = "127.0.0.1:0" }
  build {
    command = [%q, %q, "{output}"]
    env     = { BATON_TEST_CHILD = "fake-build" }
    watch   = [%q]
  }
}
`, gate, argv[0], argv[1], src), Config{Dev: true})
	release.Write([]byte{1})
	h.waitEvent("app", "ready", 1)

	os.WriteFile(filepath.Join(src, "a.go"), []byte("package main"), 0o644)
	h.waitLog("starting: program=app gen=2", 1) // waits at the gate
	os.WriteFile(filepath.Join(src, "b.go"), []byte("package main"), 0o644)
	h.waitLog("handover requested during a handover: queued", 1)
	release.Write([]byte{1, 1}) // gen 2, then gen 3
	h.waitEvent("app", "ready", 2)
	h.waitEvent("app", "ready", 3)

	release.Write([]byte{1})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := h.sup.Reload(ctx, ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatalf("reload after the queued build served: %v", err)
	}
	if st := h.status("app"); st.Generation != 4 {
		t.Fatalf("want gen 4 serving, have %+v", st)
	}
	h.stop()
}

// Start during a restart backoff starts the program at once and waits
// for it, instead of answering success with nothing started.
func TestStart_duringBackoffStartsNow(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `restart {
    backoff     = "1h"
    max_backoff = "1h"
  }`))
	h.waitEvent("app", "ready", 1)
	syscall.Kill(h.status("app").PID, syscall.SIGKILL)
	h.waitLog("restarting after a backoff", 1)
	res, err := h.sup.StartProgram(context.Background(), "app")
	if err != nil || res.Generation != 2 {
		t.Fatalf("Start in backoff: want gen 2 serving, have %+v %v", res, err)
	}
	if st := h.status("app"); st.State != control.StateRunning || st.PID != get(t, h.sup.Addr("app", "http")) {
		t.Fatalf("after Start: %+v", st)
	}
	h.stop()
}
