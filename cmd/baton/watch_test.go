package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/loadgen"
)

// copyFile copies src to dst, appending extra: a different binary that
// still runs (an ELF file ignores what follows it).
func copyFile(t *testing.T, src, dst, extra string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	io.WriteString(out, extra)
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// deploy puts a binary in place the way deploy tools do: written beside
// it, then renamed over it.
func deploy(t *testing.T, orders, bin, extra string) {
	t.Helper()
	copyFile(t, orders, bin+".new", extra)
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
}

// baton run notices a new binary moved into place and hands over under
// POST load without a failed request; the same bytes again cause nothing;
// a burst of 50 deploys causes at least one handover and at most one per
// distinct content, and the last content serves in the end.
func TestRun_binaryDeployUnderLoad(t *testing.T) {
	orders := buildOrders(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	bin := filepath.Join(dir, "bin", "orders")
	deploy(t, orders, bin, "")
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(`
log { level = "debug" }
program "orders" {
  command = ["./bin/orders"]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "127.0.0.1:0" }
}
`), 0o644)
	baton := startBaton(t, "run", "-config", cfg)
	addr := reAddr.FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))[1]
	baton.WaitOutput("ready: program=orders gen=1", waitLong)
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 32})
	load.WaitAcked(500, waitLong)
	starts := func() int { return strings.Count(baton.Output(), "starting: program=orders") }

	deploy(t, orders, bin, "v2")
	baton.WaitOutput("handover: new generation ready, stopping the old one: program=orders gen=2", waitLong)
	load.WaitAcked(load.Acked()+500, waitLong)

	deploy(t, orders, bin, "v2") // the same bytes
	if _, ok := baton.Out.Wait("same content as before", 1, waitLong); !ok {
		t.Fatalf("the redeploy of the same bytes was not noticed; log:\n%s", baton.Output())
	}
	if n := starts(); n != 2 {
		t.Fatalf("the same bytes started a generation: %d starts", n)
	}

	for i := 0; i < 50; i++ {
		deploy(t, orders, bin, fmt.Sprintf("v3-%d", i))
	}
	// Wait until the last content serves: each handover's generation runs
	// some content of the burst; the watcher's last fire is the last one.
	want := fileHash(t, bin)
	for handovers := 2; ; handovers++ {
		line := baton.WaitOutput(fmt.Sprintf("handover: new generation ready, stopping the old one: program=orders gen=%d", handovers+1), waitLong)
		pid, _ := strconv.Atoi(regexp.MustCompile(` pid=(\d+)`).FindStringSubmatch(line)[1])
		if fileHash(t, fmt.Sprintf("/proc/%d/exe", pid)) == want {
			break
		}
	}
	load.WaitAcked(load.Acked()+500, waitLong)
	res := load.Stop()
	if burst := starts() - 2; burst < 1 || burst > 50 {
		t.Fatalf("a burst of 50 deploys started %d generations; want 1 to 50", burst)
	}
	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit status %d", code)
	}
	checkLoad(t, res, filepath.Join(dir, "orders.db"))
	t.Logf("burst of 50 deploys: %d generations; %d requests, 0 failed", starts()-2, res.Requests)
}

// fileHash returns the SHA-256 of a file's content.
func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func exitStatus(st *os.ProcessState) (int, string) {
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal().String()
	}
	return ws.ExitStatus(), ""
}

func checkLoad(t *testing.T, res *loadgen.Result, db string) {
	t.Helper()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders missing", len(missing), len(res.Acked))
	}
	t.Logf("%d requests, %d orders acknowledged and written, 0 failed", res.Requests, len(res.Acked))
}

// copyModule copies what the root config.hcl builds into dir: go.mod,
// go.sum, config.hcl and the packages of examples/orders.
func copyModule(t *testing.T, dir string) {
	t.Helper()
	root := "../.."
	for _, p := range []string{"go.mod", "go.sum", "config.hcl", "child", "internal", "examples/orders"} {
		err := filepath.WalkDir(filepath.Join(root, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dir, rel), 0o755)
			}
			if strings.HasSuffix(path, ".db") || strings.Contains(path, ".db-") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// baton dev with the repository's config.hcl: it builds examples/orders;
// a source change rebuilds and hands over under load without a failed
// request; a compile error keeps the serving generation and shows the
// compiler naming the file; the fix hands over again.
func TestDev_rootConfig(t *testing.T) {
	buildOrders(t) // warms the build cache the dev builds use
	dir := t.TempDir()
	copyModule(t, dir)
	cfg := filepath.Join(dir, "config.hcl")
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(b), `"127.0.0.1:8080"`, `"127.0.0.1:0"`, 1)), 0o644)

	baton := startBaton(t, "dev", "-config", cfg)
	baton.WaitOutput("gen 1 serving", 5*waitLong)
	addr := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))[1]
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16})
	load.WaitAcked(500, waitLong)

	handlers := filepath.Join(dir, "examples/orders/handlers.go")
	src, _ := os.ReadFile(handlers)
	edit := func(s string) {
		if err := os.WriteFile(handlers, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit(strings.Replace(string(src), "shutting down, retry on a new connection", "shutting down; retry", 1))
	line := baton.WaitOutput("gen 2 serving", 3*waitLong)
	if !strings.Contains(line, "examples/orders/handlers.go changed · built in") {
		t.Fatalf("cycle line: %q", line)
	}
	load.WaitAcked(load.Acked()+500, waitLong)

	edit(string(src) + "\nfunc broken( {\n")
	line = baton.WaitOutput("· build failed", 3*waitLong)
	if !strings.Contains(line, "gen 2 keeps serving") {
		t.Fatalf("cycle line: %q", line)
	}
	baton.WaitOutput("examples/orders/handlers.go:", waitLong) // the compiler names the file
	load.WaitAcked(load.Acked()+500, waitLong)

	edit(string(src))
	baton.WaitOutput("gen 3 serving", 3*waitLong)
	load.WaitAcked(load.Acked()+500, waitLong)
	res := load.Stop()

	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit status %d; output:\n%s", code, baton.Output())
	}
	checkLoad(t, res, filepath.Join(dir, "orders.db"))
	if entries, _ := os.ReadDir(filepath.Join(dir, ".baton/build/orders")); len(entries) > 0 {
		t.Fatalf("build outputs left behind: %v", entries)
	}
}

// A storm of 100 SIGHUPs under POST load: they merge into a few
// handovers, not one request fails and no acknowledged order is lost.
func TestRun_reloadStormUnderLoad(t *testing.T) {
	baton, dir, cfg, addr := runOrders(t)
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 32})
	load.WaitAcked(1000, waitLong)
	for i := 0; i < 100; i++ {
		baton.Signal(syscall.SIGHUP)
	}
	// A reload that waits for its outcome ends after the storm's.
	if code, out, errs := ctl(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("reload after the storm: %d %s %s", code, out, errs)
	}
	load.WaitAcked(load.Acked()+1000, waitLong)
	res := load.Stop()
	starts := strings.Count(baton.Output(), "starting: program=orders")
	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit %d", code)
	}
	checkLoad(t, res, filepath.Join(dir, "orders.db"))
	if starts > 20 {
		t.Fatalf("100 SIGHUPs started %d generations", starts)
	}
	t.Logf("100 SIGHUPs and a reload: %d generations", starts)
}
