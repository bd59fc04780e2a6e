package supervisor

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/control"
)

// bakeProgram is a fake server that bakes, with env for its bad versions.
func bakeProgram(bake, env string) string {
	return withEnv(fakeProgram("app", "serve", "bake {\n"+bake+"\n  }"), "serve", env)
}

// A deploy that passes READY is judged while the old generation serves;
// each bad version is reverted to the old generation, still warm, and
// the good one takes over; under load, nothing fails but the bad
// version's own 5xx.
func TestBake_verdicts(t *testing.T) {
	const bake = `
    duration   = "3s"
    interval   = "100ms"
    max_errors = "1%"
    max_p99    = "4x"`
	for _, tc := range []struct {
		name, env string
		pass      bool
		why       string
	}{
		{"good", `VERSION = "2"`, true, "passed 3s of bake"},
		{"5xx", `FAKE_FAIL_EVERY = "5"`, false, "5xx on"},
		// 100 ms more per request lands in the 250 ms bucket: the old
		// generation's p99 would have to pass 50 ms, which a busy
		// machine does not make it, to hide it behind max_p99 = "4x".
		{"slow", `FAKE_LATENCY = "100ms"`, false, "p99 latency"},
		{"crash", `FAKE_CRASH_AFTER = "300ms"`, false, "exited during the bake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const metrics = "metrics { address = \"127.0.0.1:0\" }\n"
			h := newHarness(t, metrics+bakeProgram(bake, `VERSION = "1"`))
			h.waitEvent("app", "ready", 1)
			old := h.status("app").PID
			// New connections reach both generations: clients that keep
			// theirs forever would only ever see the old one.
			load := loadgen.Start(context.Background(), loadgen.Config{Addr: h.sup.Addr("app", "http"), Clients: 8, Get: true, Path: "/", PerConnection: 5})
			load.WaitAcked(200, waitLong)
			h.write(metrics + bakeProgram(bake, tc.env))
			reloaded := make(chan error, 1)
			go func() {
				_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "deploy", Force: true})
				reloaded <- err
			}()
			h.waitLog("baking: the new generation serves beside the old one", 1)
			if st := h.status("app"); st.State != control.StateBaking || st.PID != old || st.Bake == nil || st.Bake.Verdict != "baking" {
				t.Fatalf("during the bake: %+v", st)
			}
			err := <-reloaded
			load.WaitAcked(load.Acked()+200, waitLong)
			res := load.Stop()
			st := h.status("app")
			if st.Bake == nil || !strings.Contains(st.Bake.Reason, tc.why) {
				t.Fatalf("verdict: want %q, have %+v (%v)\n%s", tc.why, st.Bake, err, h.log)
			}
			if tc.pass {
				if err != nil || st.Bake.Verdict != "passed" || st.Generation != 2 || st.Handovers != 1 {
					t.Fatalf("a good version: want gen 2 serving, have %+v %v", st, err)
				}
				h.waitEvent("app", "exit", 1)
			} else {
				if !errors.Is(err, ErrReverted) || st.Bake.Verdict != "failed" || st.PID != old || st.Reverts != 1 || st.Handovers != 0 {
					t.Fatalf("a bad version: want a revert to pid %d, have %+v %v", old, st, err)
				}
				if get(t, h.sup.Addr("app", "http")) != old {
					t.Fatal("the old generation does not serve after the revert")
				}
				h.waitEvent("app", "exit", 2)
			}
			var failed int64
			for kind, n := range res.Failed {
				switch {
				case kind == "status_500" && tc.name == "5xx":
				case tc.name == "crash":
					// The connections the crash cut: at most one per client.
					if n > 8 {
						t.Errorf("the crash failed %d requests of kind %s, more than one per client", n, kind)
					}
				default:
					failed += n
				}
			}
			if failed != 0 {
				t.Fatalf("%d of %d requests failed: %v %v", failed, res.Requests, res.Failed, res.Examples)
			}
			// The verdict is in the metrics too.
			reverts := 1
			if tc.pass {
				reverts = 0
			}
			if m := proctest.Get(t, "http://"+h.sup.metricsLn.Addr().String()+"/metrics"); !strings.Contains(m, fmt.Sprintf(`baton_program_reverts_total{program="app"} %d`, reverts)) {
				t.Fatalf("metrics: want %d reverts:\n%s", reverts, m)
			}
			t.Logf("%s: %d requests, failures %v; %s", tc.name, res.Requests, res.Failed, st.Bake.Reason)
			h.stop()
		})
	}
}

// A newer deploy during a bake ends it (the generation baking drains)
// and starts from the last good generation; promote and revert end a
// bake at once.
func TestBake_newerDeployPromoteRevert(t *testing.T) {
	const bake = `
    duration = "1h"
    interval = "100ms"`
	h := newHarness(t, bakeProgram(bake, `VERSION = "1"`))
	h.waitEvent("app", "ready", 1)
	old := h.status("app").PID
	if _, err := h.sup.PromoteProgram(context.Background(), "app"); !errors.Is(err, ErrNotBaking) {
		t.Fatalf("promote while running: want ErrNotBaking, have %v", err)
	}
	deploy := func(version string) chan error {
		h.write(bakeProgram(bake, `VERSION = "`+version+`"`))
		done := make(chan error, 1)
		go func() {
			_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "deploy " + version, Force: true})
			done <- err
		}()
		return done
	}
	first := deploy("2")
	h.waitLog("baking: the new generation serves beside the old one until its verdict: program=app gen=2", 1)
	second := deploy("3")
	if err := <-first; !errors.Is(err, ErrReverted) || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("the superseded deploy: %v", err)
	}
	h.waitLog("baking: the new generation serves beside the old one until its verdict: program=app gen=3", 1)
	if st := h.status("app"); st.PID != old || st.State != control.StateBaking {
		t.Fatalf("the newer deploy does not bake beside the last good generation: %+v", st)
	}
	h.waitEvent("app", "exit", 2)
	if _, err := h.sup.RevertProgram(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	if err := <-second; !errors.Is(err, ErrReverted) {
		t.Fatalf("the reverted deploy: %v", err)
	}
	if st := h.status("app"); st.PID != old || st.State != control.StateRunning || st.Bake.Verdict != "failed" {
		t.Fatalf("after the revert: %+v", st)
	}
	third := deploy("4")
	h.waitLog("baking: the new generation serves beside the old one until its verdict: program=app gen=4", 1)
	if _, err := h.sup.PromoteProgram(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	if st := h.status("app"); st.Generation != 4 || st.Bake.Verdict != "passed" {
		t.Fatalf("after the promote: %+v", st)
	}
	h.waitEvent("app", "exit", 1)
	h.stop()
}

// baton rollback hands over to the binary of the generation before, which
// baton kept, even after the file on disk was replaced twice since.
func TestRollback_toTheKeptBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "app")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	self, _ := os.Executable()
	install := func(extra string) string {
		b, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, extra...)
		proctest.Replace(t, bin, string(b))
		return fmt.Sprintf("%x", sha256Sum(b))
	}
	v1 := install("v1")
	argv, sel := proctest.SelfArgv("serve")
	_, child, _ := strings.Cut(sel, "=")
	cfg := fmt.Sprintf(`
watch { enabled = false }
program "app" {
  command = [%q, %q]
  env     = { %s = %q }
  listener "http" { address = "127.0.0.1:0" }
}
`, bin, argv[1], proctest.EnvChild, child)
	h := newHarnessWith(t, cfg, Config{})
	h.waitEvent("app", "ready", 1)
	h.waitLog("kept the binary for rollback: program=app gen=1", 1)
	install("v2")
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "deploy v2", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitLog("kept the binary for rollback: program=app gen=2", 1)
	install("v3, never started: the file on disk is neither")
	if _, err := h.sup.RollbackProgram(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	st := h.status("app")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/exe", st.PID))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", sha256Sum(b)) != v1 || st.Generation != 3 {
		t.Fatalf("after the rollback gen %d runs other bytes than v1", st.Generation)
	}
	h.stop()
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// Clients that keep their connections forever (a proxy's upstream
// pool) reach the generation that bakes too: the old one passes half of
// its connections to it, each once idle, and back they come when it is
// reverted. A version that answers every 5th request 500 is judged on
// them and reverted; nothing fails but its 500s, and no client ever
// reconnects.
func TestBake_keepAliveClientsReachTheNewGeneration(t *testing.T) {
	const bake = `
    duration   = "5s"
    interval   = "100ms"
    max_errors = "1%"`
	h := newHarness(t, bakeProgram(bake, `VERSION = "1"`))
	h.waitEvent("app", "ready", 1)
	old := h.status("app").PID
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: h.sup.Addr("app", "http"), Clients: 8, Get: true, Path: "/"})
	load.WaitAcked(200, waitLong)
	h.write(bakeProgram(bake, `FAKE_FAIL_EVERY = "5"`))
	_, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "deploy", Force: true})
	load.WaitAcked(load.Acked()+200, waitLong)
	res := load.Stop()
	st := h.status("app")
	if !errors.Is(err, ErrReverted) || st.Bake == nil || !strings.Contains(st.Bake.Reason, "5xx on") || st.PID != old {
		t.Fatalf("want a revert on the 500s to pid %d, have %v, %+v\n%s", old, err, st.Bake, h.log)
	}
	h.waitLog("a new generation bakes beside this one: half of the connections move to it", 1)
	for kind, n := range res.Failed {
		if kind != "status_500" {
			t.Fatalf("%d requests failed with %s: %v %v", n, kind, res.Failed, res.Examples)
		}
	}
	if res.Dials != 8 {
		t.Fatalf("want the 8 clients' connections to move, have %d connections in all", res.Dials)
	}
	t.Logf("%d requests on %d connections, failures %v; %s", res.Requests, res.Dials, res.Failed, st.Bake.Reason)
	h.stop()
}
