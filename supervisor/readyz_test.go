package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-run/baton/supervisor/control"
)

// readyz asks path ("/readyz", "/livez", "/readyz/app") of the health
// address and returns the status code and the decoded body.
func readyz(t *testing.T, addr, path string) (int, readiness) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r readiness
	json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r
}

// gatedProgram is a fake "serve" program whose generations each wait for
// a byte on a FIFO before they serve (and so before READY); write a byte
// to the returned file to let one through.
func gatedProgram(t *testing.T, name, extra string) (block string, release *os.File) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	release, err := os.OpenFile(gate, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release.Close() })
	return strings.Replace(fakeProgram(name, "serve", extra), `BATON_TEST_CHILD = "serve"`, fmt.Sprintf(`BATON_TEST_CHILD = "serve", FAKE_GATE = %q`, gate), 1), release
}

// /readyz is 503 until the first generation is ready, then 200 through a
// handover: while the new generation starts, and while the old one drains
// beside the new one. /livez answers 200 throughout.
func TestReadyz_handoverNeverFailsIt(t *testing.T) {
	block, release := gatedProgram(t, "app", "")
	h := newHarness(t, `health { address = "127.0.0.1:0" }`+block)
	addr := h.sup.HealthAddr()

	if code, r := readyz(t, addr, "/readyz"); code != 503 || r.Ready || r.Programs[0].State != control.StateStarting {
		t.Fatalf("before the first READY: want 503 with app starting, have %d %+v", code, r)
	}
	if code, _ := readyz(t, addr, "/livez"); code != 200 {
		t.Fatalf("/livez: want 200, have %d", code)
	}
	release.Write([]byte{1})
	h.waitEvent("app", "ready", 1)
	if code, r := readyz(t, addr, "/readyz"); code != 200 || !r.Ready {
		t.Fatalf("serving: want 200, have %d %+v", code, r)
	}

	// Gen 1 keeps an idle keep-alive connection, so it drains until the
	// test closes it.
	idle := dialKeepAlive(t, h.sup.Addr("app", "http"))
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.RestartProgram(context.Background(), "app")
		done <- err
	}()
	h.waitLog("starting: program=app gen=2", 1)
	if st := h.status("app"); st.Pending != 2 {
		t.Fatalf("want gen 2 starting, have %+v", st)
	}
	if code, r := readyz(t, addr, "/readyz"); code != 200 {
		t.Fatalf("while gen 2 starts: want 200, have %d %+v", code, r)
	}
	release.Write([]byte{1})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := h.status("app"); st.Generation != 2 || !slices.Equal(st.Draining, []int{1}) {
		t.Fatalf("want gen 2 serving and gen 1 draining, have %+v", st)
	}
	if code, r := readyz(t, addr, "/readyz"); code != 200 {
		t.Fatalf("while gen 1 drains: want 200, have %d %+v", code, r)
	}
	idle.Close()
	h.waitEvent("app", "exit", 1)
	if code, _ := readyz(t, addr, "/readyz/app"); code != 200 {
		t.Fatalf("/readyz/app: want 200, have %d", code)
	}
	if code, _ := readyz(t, addr, "/readyz/nope"); code != 404 {
		t.Fatalf("/readyz/nope: want 404, have %d", code)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// A one-shot that completed serves nothing and does not hold the host
// back; one that failed does (what comes after it waits).
func TestReadyz_oneshotCompleted(t *testing.T) {
	migrate := func(code string) string {
		return withEnv(fakeProgram("migrate", "oneshot", `type = "oneshot"`), "oneshot", `FAKE_EXIT = "`+code+`"`)
	}
	app := fakeProgram("app", "serve", `after = ["migrate"]`)
	const health = `health { address = "127.0.0.1:0" }`
	h := newHarness(t, health+migrate("3")+app)
	h.waitLog("start order: program=app state=\"waiting for migrate", 1)
	if code, r := readyz(t, h.sup.HealthAddr(), "/readyz"); code != 503 {
		t.Fatalf("after a failed one-shot: want 503, have %d %+v", code, r)
	}
	h.write(health + migrate("0") + app)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Programs: []string{"migrate"}, Reason: "fixed", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "ready", 1)
	if code, r := readyz(t, h.sup.HealthAddr(), "/readyz"); code != 200 || r.Programs[0].State != control.StateExited {
		t.Fatalf("one-shot completed, app serving: want 200, have %d %+v", code, r)
	}
	h.stop()
}

// A bake never fails /readyz either: both generations serve until its
// verdict.
func TestReadyz_bakeIsServing(t *testing.T) {
	const bake = `
    duration = "1h"
    interval = "100ms"`
	h := newHarness(t, `health { address = "127.0.0.1:0" }`+bakeProgram(bake, `VERSION = "1"`))
	h.waitEvent("app", "ready", 1)
	h.write(`health { address = "127.0.0.1:0" }` + bakeProgram(bake, `VERSION = "2"`))
	go h.sup.Reload(context.Background(), ReloadRequest{Reason: "deploy", Force: true})
	h.waitLog("baking: the new generation serves beside the old one", 1)
	if code, r := readyz(t, h.sup.HealthAddr(), "/readyz"); code != 200 || r.Programs[0].State != control.StateBaking {
		t.Fatalf("during the bake: want 200 with app baking, have %d %+v", code, r)
	}
	h.stop()
}

// A program that crashed and waits out its backoff makes the host not
// ready; one stopped on request does not, but /readyz/{name} says it
// does not serve. Served beside /metrics without a health block.
func TestReadyz_programStates(t *testing.T) {
	h := newHarness(t, `metrics { address = "127.0.0.1:0" }`+fakeProgram("app", "serve", `restart {
    backoff     = "1h"
    max_backoff = "1h"
  }`)+fakeProgram("other", "serve", ""))
	addr := h.sup.HealthAddr()
	h.waitEvent("app", "ready", 1)
	h.waitEvent("other", "ready", 1)
	if code, _ := readyz(t, addr, "/readyz"); code != 200 {
		t.Fatalf("both serving: want 200, have %d", code)
	}
	syscall.Kill(h.status("app").PID, syscall.SIGKILL)
	h.waitLog("restarting after a backoff", 1)
	if code, r := readyz(t, addr, "/readyz"); code != 503 || r.Programs[0].State != control.StateBackoff || !r.Programs[1].Ready {
		t.Fatalf("app in backoff: want 503, have %d %+v", code, r)
	}
	if err := h.sup.StopProgram(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	if code, r := readyz(t, addr, "/readyz"); code != 200 {
		t.Fatalf("app stopped on request: want 200, have %d %+v", code, r)
	}
	if code, _ := readyz(t, addr, "/readyz/app"); code != 503 {
		t.Fatalf("/readyz/app of a stopped program: want 503, have %d", code)
	}
	if err := h.sup.StopProgram(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	if code, _ := readyz(t, addr, "/readyz"); code != 503 {
		t.Fatalf("nothing should serve: want 503, have %d", code)
	}
	h.stop()
}

// With shutdown_delay, the final stop fails /readyz at once while the
// program keeps serving, unchanged; the delay is ended here by an
// immediate stop, which still works.
func TestShutdownDelay_readyzFailsWhileProgramsServe(t *testing.T) {
	h := newHarness(t, "shutdown_delay = \"1h\"\nhealth { address = \"127.0.0.1:0\" }\n"+fakeProgram("app", "serve", ""))
	addr := h.sup.HealthAddr()
	h.waitEvent("app", "ready", 1)
	pid := h.status("app").PID
	h.cancel()
	h.waitLog("/readyz fails now", 1)
	if code, r := readyz(t, addr, "/readyz"); code != 503 || !r.Stopping {
		t.Fatalf("during the shutdown delay: want 503 stopping, have %d %+v", code, r)
	}
	if code, _ := readyz(t, addr, "/livez"); code != 200 {
		t.Fatalf("/livez during the shutdown delay: want 200, have %d", code)
	}
	if served := get(t, h.sup.Addr("app", "http")); served != pid {
		t.Fatalf("during the shutdown delay: want gen 1 (pid %d) serving, have pid %d", pid, served)
	}
	if st := h.status("app"); st.State != control.StateRunning {
		t.Fatalf("during the shutdown delay: want app running, have %s", st.State)
	}
	h.sup.Kill()
	if err := h.stop(); !errors.Is(err, ErrKilled) {
		t.Fatalf("Run: want ErrKilled, have %v", err)
	}
}

// Once the shutdown delay is over, every program stops gracefully, as
// without one: its stop signal comes after the delay, never before.
func TestShutdownDelay_thenGracefulStop(t *testing.T) {
	h := newHarness(t, "shutdown_delay = \"50ms\"\n"+fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	if err := h.stop(); err != nil {
		t.Fatalf("Run: want nil, have %v", err)
	}
	log := h.log.String()
	fails, over, stopping := strings.Index(log, "/readyz fails now"), strings.Index(log, "shutdown delay over"), strings.Index(log, "stopping: program=app")
	if fails < 0 || over < fails || stopping < over {
		t.Fatalf("want /readyz to fail, then the delay to end, then app to stop; log:\n%s", log)
	}
	if !strings.Contains(log, `generation exited: program=app gen=1 pid=`) || !strings.Contains(log, `status="exit status 0"`) || strings.Contains(log, "killing") {
		t.Fatalf("want app to exit 0 without a kill; log:\n%s", log)
	}
}
