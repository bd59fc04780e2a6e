package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
)

// withEnv adds environment variables to a fakeProgram block.
func withEnv(block, fake, env string) string {
	return strings.Replace(block, fmt.Sprintf("BATON_TEST_CHILD = %q", fake), fmt.Sprintf("BATON_TEST_CHILD = %q, %s", fake, env), 1)
}

// A new generation that says READY=1 and exits at once does not take
// over for good: its exit makes the program restart, not vanish.
func TestFault_exitRightAfterReady(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	h.write(fakeProgram("app", "ready-exit", `restart { backoff = "10ms" }`))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err) // it was ready: the handover completed
	}
	h.waitEvent("app", "exit", 2)
	h.waitLog("serving generation crashed", 1)
	h.waitLog("restarting after a backoff", 1)
	h.waitEvent("app", "ready", 3) // the restart
	if st := h.status("app"); st.Restarts < 1 {
		t.Fatalf("after the crash: want a restart, have %+v", st)
	}
	h.stop()
}

// The serving generation dies while the next one starts: the next one
// takes over when ready, and nothing else is started.
func TestFault_exitInTheMiddleOfAHandover(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	syscall.Mkfifo(gate, 0o600)
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	h.write(withEnv(fakeProgram("app", "serve", ""), "serve", fmt.Sprintf("FAKE_GATE = %q", gate)))
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
		done <- err
	}()
	h.waitLog("starting: program=app gen=2", 1)
	syscall.Kill(first, syscall.SIGKILL)
	h.waitEvent("app", "exit", 1)
	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{1})
	f.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := h.status("app")
	if st.Generation != 2 || st.Restarts != 0 || h.log.Count("starting: program=app") != 2 {
		t.Fatalf("want gen 2 serving, no restart, 2 starts; have %+v, %d starts", st, h.log.Count("starting: program=app"))
	}
	h.stop()
}

// A generation SIGKILLed while it drains is recorded as killed; nothing
// restarts, the new generation serves on.
func TestFault_childKilledWhileDraining(t *testing.T) {
	h := newHarness(t, withEnv(fakeProgram("app", "slow-drain", ""), "slow-drain", `FAKE_DELAY = "1h"`))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitLog("finishing background work", 1)
	syscall.Kill(first, syscall.SIGKILL)
	h.waitEvent("app", "exit", 1)
	st := h.status("app")
	if st.LastExit.Signal != "SIGKILL" || st.LastExit.Status != "finishing background work" || st.Restarts != 0 || st.Generation != 2 {
		t.Fatalf("want gen 1 recorded as killed while finishing, gen 2 serving; have %+v, %+v", st, st.LastExit)
	}
	h.sup.Kill() // gen 2 drains for an hour too
	<-h.done
}

// A slow drain does not block the next handover: two old generations may
// drain at once.
func TestFault_slowDrainDoesNotBlockHandovers(t *testing.T) {
	h := newHarness(t, withEnv(fakeProgram("app", "slow-drain", ""), "slow-drain", `FAKE_DELAY = "1h"`))
	h.waitEvent("app", "ready", 1)
	for gen := 2; gen <= 3; gen++ {
		if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
			t.Fatal(err)
		}
		h.waitLog("finishing background work", gen-1)
	}
	if st := h.status("app"); st.Generation != 3 || len(st.Draining) != 2 {
		t.Fatalf("want gen 3 serving while 1 and 2 drain, have %+v", st)
	}
	h.sup.Kill()
	<-h.done
}

// A client that holds a connection open forever cannot hold a generation
// past its stop timeout: the child's drain bounds, fitted in
// BATON_STOP_TIMEOUT, end it, and it exits 0 (an idle connection closed
// by the drain cut nothing off).
func TestFault_connectionHeldForever(t *testing.T) {
	// move_idle = false: otherwise the idle connection moves to gen 2.
	h := newHarness(t, fakeProgram("app", "serve", `stop {
    timeout   = "3s"
    move_idle = false
  }`))
	h.waitEvent("app", "ready", 1)
	c := dialKeepAlive(t, h.sup.Addr("app", "http"))
	defer c.Close()
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	if last := h.status("app").LastExit; last.Code != 0 || last.Killed != "" {
		t.Fatalf("the old generation: want exit 0 within its stop timeout, have %+v", last)
	}
	h.stop()
}

// A binary deleted, or made non-executable: an explicit reload is rolled
// back with the reason, the serving generation serves on.
func TestFault_binaryDeletedOrNotExecutable(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	argv, sel := proctest.SelfArgv("serve")
	os.WriteFile(bin, []byte(fmt.Sprintf("#!/bin/sh\nexport %s\nexec %q %q\n", sel, argv[0], argv[1])), 0o755)
	h := newHarness(t, fmt.Sprintf(`
program "app" {
  command = [%q]
  listener "http" { address = "127.0.0.1:0" }
}
`, bin))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	os.Chmod(bin, 0o644)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("non-executable: want a rollback saying so, have %v", err)
	}
	os.Remove(bin)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("deleted: want a rollback saying so, have %v", err)
	}
	if st := h.status("app"); st.PID != first || get(t, h.sup.Addr("app", "http")) != first {
		t.Fatalf("the serving generation changed: %+v", st)
	}
	h.stop()
}

// A config that cannot be read (removed, or replaced by a directory)
// changes nothing.
func TestFault_unreadableConfig(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	os.Remove(h.file)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err == nil || !strings.Contains(err.Error(), "Cannot read the config file") {
		t.Fatalf("removed config: %v", err)
	}
	os.Mkdir(h.file, 0o755)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("config replaced by a directory: %v", err)
	}
	if st := h.status("app"); st.PID != first || st.Generation != 1 {
		t.Fatalf("something changed: %+v", st)
	}
	h.stop()
}

// A storm of 100 reload requests in a second, each with a new config: each
// succeeds, they are merged into a few handovers that never run in
// parallel (a generation starts only once the one before it is ready),
// and the last config wins.
func TestFault_reloadStorm(t *testing.T) {
	h := newHarness(t, withEnv(fakeProgram("app", "serve", ""), "serve", `VERSION = "0"`))
	h.waitEvent("app", "ready", 1)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	reload := func(i int) {
		proctest.Replace(t, h.file, withEnv(fakeProgram("app", "serve", ""), "serve", fmt.Sprintf(`VERSION = "%d"`, i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "storm", Force: true})
			errs <- err
		}()
	}
	reload(1)
	h.waitLog("starting: program=app gen=2", 1) // the rest come during a handover
	for i := 2; i <= 100; i++ {
		reload(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a reload of the storm failed: %v", err)
		}
	}
	st := h.status("app")
	for gen := 1; gen < st.Generation; gen++ {
		h.waitEvent("app", "exit", gen) // until then an old one may still accept
	}
	env := proctest.Get(t, "http://"+h.sup.Addr("app", "http")+"/env")
	if !strings.Contains(env, "VERSION=100\n") {
		t.Fatalf("the last config did not win: %s", env)
	}
	// Never parallel: each "starting" is followed by the readiness of
	// that generation before the next "starting".
	re := regexp.MustCompile(`(starting|\] +baton: ready|handover: new generation ready, stopping the old one): program=app gen=(\d+)`)
	var last string
	starting := 0
	for _, m := range re.FindAllStringSubmatch(h.log.String(), -1) {
		switch {
		case m[1] == "starting" && last == "starting":
			t.Fatalf("gen %s started while gen %d was starting", m[2], starting)
		case m[1] == "starting":
			starting, _ = strconv.Atoi(m[2])
		case m[2] != strconv.Itoa(starting):
			t.Fatalf("gen %s became ready while gen %d was the one starting", m[2], starting)
		}
		last = m[1]
	}
	starts := h.log.Count("starting: program=app")
	if starts > 20 {
		t.Fatalf("100 requests started %d generations; they should merge", starts)
	}
	t.Logf("100 reloads: %d generations started, gen %d serves the last config", starts, st.Generation)
	h.stop()
}

// The protocol variables and the listening socket do not reach the
// programs a child starts.
func TestSecurity_nothingLeaksToGrandchildren(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "env-grandchild", ""))
	h.waitEvent("app", "ready", 1)
	line := h.waitLog("grandchild env:", 1)
	if !strings.Contains(line, `LISTEN_FDS="" LISTEN_PID="" LISTEN_FDNAMES="" NOTIFY_SOCKET="" BATON_HANDOFF_FD="" BATON_LISTEN_PPID="" fd3=no listening socket fd4=no handoff socket`) {
		t.Fatalf("a grandchild inherited: %s", line)
	}
	h.stop()
}

// The environment given to programs is not written to the log, even when
// they fail.
func TestSecurity_envNotLogged(t *testing.T) {
	h := newHarness(t, withEnv(fakeProgram("app", "serve", ""), "serve", `API_TOKEN = "s3cr3t-t0ken"`))
	h.waitEvent("app", "ready", 1)
	h.write(withEnv(fakeProgram("app", "crash", ""), "crash", `API_TOKEN = "s3cr3t-t0ken"`))
	h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true})
	h.sup.Status()
	h.stop()
	if strings.Contains(h.log.String(), "s3cr3t") {
		t.Fatal("a secret from the environment is in the log")
	}
}

// 200 handovers leave baton with the descriptors and goroutines it had.
func TestLeaks_200Handovers(t *testing.T) {
	if testing.Short() {
		t.Skip("200 handovers")
	}
	h := newHarness(t, fakeProgram("app", "serve", `ready { timeout = "60s" }`))
	h.waitEvent("app", "ready", 1)
	// One handover first: pools and caches that fill once are not leaks.
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "warm-up", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	fds0, g0 := openFDs(t), runtime.NumGoroutine()
	for gen := 3; gen <= 202; gen++ {
		if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "leak test", Force: true}); err != nil {
			t.Fatal(err)
		}
		h.waitEvent("app", "exit", gen-1)
	}
	fds1, g1 := openFDs(t), runtime.NumGoroutine()
	if fds1 != fds0 || g1 > g0+2 {
		t.Fatalf("after 200 handovers: fds %d → %d, goroutines %d → %d", fds0, fds1, g0, g1)
	}
	t.Logf("200 handovers: fds %d → %d, goroutines %d → %d", fds0, fds1, g0, g1)
	h.stop()
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// A saved env file hands the program over with the new values, which
// reach the program and never baton's log or status; a broken one changes
// nothing.
func TestEnvFile_saveHandsOver(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "app.env")
	proctest.Replace(t, env, "API_TOKEN=s3cr3t-one\n")
	block := strings.Replace(fakeProgram("app", "serve", ""), "  env ", fmt.Sprintf("  env_file = [%q]\n  env ", env), 1)
	h := newHarness(t, `watch { debounce = "50ms" }`+block)
	h.waitEvent("app", "ready", 1)
	addr := h.sup.Addr("app", "http")
	if e := proctest.Get(t, "http://"+addr+"/env"); !strings.Contains(e, "API_TOKEN=s3cr3t-one\n") {
		t.Fatalf("the env file's value did not reach the program:\n%s", e)
	}
	proctest.Replace(t, env, "API_TOKEN=s3cr3t-two\n")
	h.waitEvent("app", "ready", 2)
	h.waitEvent("app", "exit", 1) // until then the old one may accept too
	if e := proctest.Get(t, "http://"+addr+"/env"); !strings.Contains(e, "API_TOKEN=s3cr3t-two\n") {
		t.Fatalf("the new value did not reach the program:\n%s", e)
	}
	proctest.Replace(t, env, "API_TOKEN s3cr3t-broken\n")
	h.waitLog("Invalid env file", 1)
	st := h.status("app")
	if st.Generation != 2 {
		t.Fatalf("a broken env file changed something: %+v", st)
	}
	b, _ := json.Marshal(h.sup.Status())
	h.stop()
	if strings.Contains(h.log.String(), "s3cr3t") || strings.Contains(string(b), "s3cr3t") {
		t.Fatalf("a value of the env file is in the log or the status:\n%s\n%s", h.log, b)
	}
}
