package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/fakes"
	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
)

func TestMain(m *testing.M) {
	children := map[string]func() int{
		// baton itself: the test binary runs the command line.
		"baton": func() int { return cli(os.Args[2:], os.Stdout, os.Stderr) },
	}
	for name, f := range fakes.Children {
		children[name] = f
	}
	proctest.RunChild(children)
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

const waitLong = 60 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildOrders builds examples/orders once for the package's tests.
func buildOrders(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "baton-test-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "orders"), "../../examples/orders").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build examples/orders: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "orders")
}

// startBaton runs "baton args…" as a process.
func startBaton(t *testing.T, args ...string) *proctest.Proc {
	t.Helper()
	cmd := proctest.Self("baton")
	cmd.Args = append(cmd.Args, args...)
	return proctest.Start(t, cmd)
}

var (
	reAddr = regexp.MustCompile(`serving: .*addr=(\S+)`)
	rePID  = regexp.MustCompile(`starting: program=\S+ gen=\d+ pid=(\d+)`)
)

func childPIDs(out string) []int {
	var pids []int
	for _, m := range rePID.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// runOrders runs baton with one program, the orders example on a port of
// its own, and returns baton, the config's directory and file, and the
// address the example serves on.
func runOrders(t *testing.T) (baton *proctest.Proc, dir, cfg, addr string) {
	t.Helper()
	orders := buildOrders(t)
	dir = t.TempDir()
	cfg = filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
program "orders" {
  command = [%q]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "127.0.0.1:0" }
}
`, orders)), 0o644)
	baton = startBaton(t, "run", "-config", cfg)
	m := reAddr.FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))
	if m == nil {
		t.Fatalf("no address in the log:\n%s", baton.Output())
	}
	baton.WaitOutput("ready: program=orders gen=1", waitLong)
	return baton, dir, cfg, m[1]
}

// The promise of baton: ten handovers by SIGHUP under 32 keep-alive
// clients POSTing orders, without client retries: not one request fails,
// not one acknowledged order is missing, and after SIGTERM baton exits 0
// with no child left.
func TestRun_tenHandoversUnderLoad(t *testing.T) {
	baton, dir, _, addr := runOrders(t)

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 32})
	for gen := 2; gen <= 11; gen++ {
		if !load.WaitAcked(load.Acked()+300, waitLong) {
			t.Fatalf("load stalled before handover %d; failures %d; log:\n%s", gen-1, load.Failures(), baton.Output())
		}
		baton.Signal(syscall.SIGHUP)
		if _, ok := baton.Out.Wait("handover: new generation ready", gen-1, waitLong); !ok {
			t.Fatalf("handover %d did not complete; log:\n%s", gen-1, baton.Output())
		}
		baton.WaitOutput(fmt.Sprintf("generation exited: program=orders gen=%d ", gen-1), waitLong)
	}
	load.WaitAcked(load.Acked()+300, waitLong)
	res := load.Stop()

	baton.Signal(syscall.SIGTERM)
	code, sig := proctest.ExitCode(baton.Wait(waitLong))
	if code != 0 {
		t.Fatalf("baton: want exit 0, have %d %s; log:\n%s", code, sig, baton.Output())
	}
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	missing, err := loadgen.MissingOrders(filepath.Join(dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders missing, e.g. %s", len(missing), len(res.Acked), missing[0])
	}
	pids := childPIDs(baton.Output())
	if len(pids) != 11 {
		t.Fatalf("want 11 generations started, have %d", len(pids))
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("child %d is still running after baton exited", pid)
		}
	}
	if n := strings.Count(baton.Output(), `status="exit status 0"`); n != 11 {
		t.Errorf("want 11 generations to exit 0, have %d", n)
	}
	t.Logf("%d requests, %d orders acknowledged and written, 0 failed, 10 handovers", res.Requests, len(res.Acked))
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte(`program "web" {
  command = ["./web"]
  listener "http" { address = "127.0.0.1:8080" }
}
`), 0o644)
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte(`program "web" {
  command = ["./web"]
  listener "http" { address = "127.0.0.1:8080" }
  stop { timeout = "soon" }
}
`), 0o644)
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", "-config", good}, 0, "ok, 1 program(s)", ""},
		{[]string{"check", "-config", bad}, 1, "", `bad.hcl:4,20-26: Invalid duration; "soon" is not a duration`},
		{[]string{"check", "-config", filepath.Join(dir, "none.hcl")}, 1, "", "Cannot read the config file"},
		{[]string{"check", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"check", "-h"}, 0, "", "Validate the config file"},
		{[]string{"run", "-h"}, 0, "", "SIGHUP"},
		{[]string{"version"}, 0, "baton ", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"help"}, 0, "Commands:", ""},
		{[]string{"run", "-config", bad}, 1, "", "soon"},
	} {
		var stdout, stderr bytes.Buffer
		code := cli(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("baton %s: want %d, %q, %q; have %d\nstdout: %s\nstderr: %s",
				strings.Join(tc.args, " "), tc.code, tc.out, tc.err, code, stdout.String(), stderr.String())
		}
	}
}
