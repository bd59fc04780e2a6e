package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/loadgen"
)

// bakeConfig is the orders example under baton with a short bake; fault
// is its ORDERS_FAULT ("" for a good version).
func bakeConfig(fault string) string {
	env := `ORDERS_DB = "orders.db"`
	if fault != "" {
		env += fmt.Sprintf(", ORDERS_FAULT = %q", fault)
	}
	return fmt.Sprintf(`
watch { enabled = false }
program "orders" {
  command = ["./bin/orders"]
  env     = { %s }
  listener "http" { address = "127.0.0.1:0" }
  bake {
    duration   = "2s"
    interval   = "200ms"
    http       = "/healthz"
    max_errors = "1%%"
  }
}
`, env)
}

// healthPID returns the pid that answers GET /healthz on a new
// connection.
func healthPID(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct{ PID int }
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.PID
}

// The real example under baton with a bake, under POST load from clients
// that reconnect every few requests (keep-alive clients would stay with
// the old generation): a deploy that answers 500s is reverted to the old
// process, still serving; a good deploy passes its bake and takes over;
// once the binary on disk was replaced again, baton rollback hands over
// to the binary kept from before. Nothing fails but the bad version's
// own 500s, and no acknowledged order is lost.
func TestBake_realDeploysAndRollback(t *testing.T) {
	orders := buildOrders(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	bin := filepath.Join(dir, "bin", "orders")
	deploy(t, orders, bin, "v1")
	v1 := fileHash(t, bin)
	cfg := filepath.Join(dir, "config.hcl")
	write := func(fault string) {
		if err := os.WriteFile(cfg, []byte(bakeConfig(fault)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	baton := startBaton(t, "run", "-config", cfg)
	baton.WaitOutput("ready: program=orders gen=1", waitLong)
	st := programStatus(t, cfg, "orders")
	old, addr := st.PID, st.Listeners[0].Address

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 8, PerConnection: 5})
	defer load.Stop()
	load.WaitAcked(500, waitLong)

	// A bad deploy: a config that makes the next generation answer 10 %
	// of its orders 500. It is ready, bakes beside gen 1, and is reverted.
	write("errors=10%")
	code, _, errs := ctl(t, "reload", "-config", cfg, "orders")
	if code != 1 || !strings.Contains(errs, "reverted") || !strings.Contains(errs, "5xx on") {
		t.Fatalf("the bad deploy: want exit 1 with the verdict, have %d %q; log:\n%s", code, errs, baton.Output())
	}
	st = programStatus(t, cfg, "orders")
	if st.PID != old || st.Generation != 1 || st.Reverts != 1 || st.Bake == nil || st.Bake.Verdict != "failed" {
		t.Fatalf("after the revert: want gen 1 (pid %d) serving and a failed bake, have %+v %+v", old, st, st.Bake)
	}
	baton.WaitOutput("generation exited: program=orders gen=2 ", waitLong)
	for range 3 {
		if pid := healthPID(t, addr); pid != old {
			t.Fatalf("after the revert pid %d answers, not the old pid %d", pid, old)
		}
	}
	if load.Failures() == 0 {
		t.Fatal("the bad version answered no 500: the test proves nothing")
	}
	load.WaitAcked(load.Acked()+500, waitLong)

	// A good deploy: a new binary and the config without the fault. It
	// passes its bake, then gen 1 drains.
	deploy(t, orders, bin, "v2")
	write("")
	code, out, errs := ctl(t, "reload", "-config", cfg, "orders")
	if code != 0 || !strings.Contains(out, "orders: gen 3 serving") {
		t.Fatalf("the good deploy: want gen 3 serving, have %d %q %q", code, out, errs)
	}
	baton.WaitOutput("generation exited: program=orders gen=1 ", waitLong)
	st = programStatus(t, cfg, "orders")
	if st.Generation != 3 || st.Bake == nil || st.Bake.Verdict != "passed" || st.Handovers != 1 {
		t.Fatalf("after the good deploy: %+v %+v", st, st.Bake)
	}
	load.WaitAcked(load.Acked()+500, waitLong)

	// The file on disk replaced again, by a version that never ran:
	// rollback hands over to the binary gen 1 ran, which baton kept.
	deploy(t, orders, bin, "v3, never started")
	code, out, errs = ctl(t, "rollback", "-config", cfg, "orders")
	if code != 0 || !strings.Contains(out, "orders: gen 4 serving") {
		t.Fatalf("rollback: want gen 4 serving, have %d %q %q", code, out, errs)
	}
	st = programStatus(t, cfg, "orders")
	if have := fileHash(t, fmt.Sprintf("/proc/%d/exe", st.PID)); have != v1 {
		t.Fatalf("after the rollback gen %d runs other bytes than v1", st.Generation)
	}
	baton.WaitOutput("generation exited: program=orders gen=3 ", waitLong)
	load.WaitAcked(load.Acked()+500, waitLong)
	res := load.Stop()

	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit status %d", code)
	}
	bad := res.Failed["status_500"]
	if res.FailedTotal() != bad {
		t.Fatalf("want no failure but the bad version's 500s, have %v %v", res.Failed, res.Examples)
	}
	missing, err := loadgen.MissingOrders(filepath.Join(dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders missing", len(missing), len(res.Acked))
	}
	t.Logf("%d requests, %d answered 500 by the bad version, 0 other failures; %d orders acknowledged, all written", res.Requests, bad, len(res.Acked))
}
