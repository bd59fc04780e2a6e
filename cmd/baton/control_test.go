package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/fakes"
	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/control"
)

// fakeBlock is a program block running a fake child of this test binary.
func fakeBlock(name, fake, extra string) string { return fakes.Program(name, fake, extra) }

// ctl runs a control command of the CLI in-process.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli(args, &out, &errb)
	return code, out.String(), errb.String()
}

func status(t *testing.T, cfg string) control.StatusReply {
	t.Helper()
	code, out, errs := ctl(t, "status", "-json", "-config", cfg)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st control.StatusReply
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	return st
}

func programStatus(t *testing.T, cfg, name string) control.ProgramStatus {
	t.Helper()
	for _, p := range status(t, cfg).Programs {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no program %q in the status", name)
	return control.ProgramStatus{}
}

// The CLI against a running baton: status names the pid that serves,
// reload NAME hands over that program only, a SIGKILLed child is restarted
// and counted, stop and start, a rolled-back reload fails with the reason,
// logs prints the output.
func TestControl_commands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	write := func(a string) {
		os.WriteFile(cfg, []byte(`watch { enabled = false }`+fakeBlock("a", a, `restart { backoff = "10ms" }`)+fakeBlock("b", "serve", "")), 0o644)
	}
	write("serve")
	baton := startBaton(t, "run", "-config", cfg)
	baton.WaitOutput("ready: program=a gen=1", waitLong)
	baton.WaitOutput("ready: program=b gen=1", waitLong)

	st, err := os.Stat(filepath.Join(dir, ".baton", "control.sock"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v %v", st.Mode(), err)
	}
	a, b := programStatus(t, cfg, "a"), programStatus(t, cfg, "b")
	if got := proctest.ServedBy(t, a.Listeners[0].Address); got != a.PID || a.State != "running" || a.Generation != 1 {
		t.Fatalf("status says pid %d (%s, gen %d), pid %d serves", a.PID, a.State, a.Generation, got)
	}
	code, out, errs := ctl(t, "status", "-config", cfg)
	if code != 0 || !strings.Contains(out, "PROGRAM") || !strings.Contains(out, "running") {
		t.Fatalf("status: %d %q %q", code, out, errs)
	}

	code, out, errs = ctl(t, "reload", "-config", cfg, "a")
	if code != 0 || !strings.Contains(out, "a: gen 2 serving") {
		t.Fatalf("reload a: %d %q %q", code, out, errs)
	}
	if nb := programStatus(t, cfg, "b"); nb.PID != b.PID {
		t.Fatalf("reload a touched b: pid %d, was %d", nb.PID, b.PID)
	}

	baton.WaitOutput("generation exited: program=a gen=1", waitLong) // its exit is not the last one
	a = programStatus(t, cfg, "a")
	syscall.Kill(a.PID, syscall.SIGKILL)
	baton.WaitOutput("ready: program=a gen=3", waitLong)
	if a = programStatus(t, cfg, "a"); a.Restarts != 1 || a.LastExit.Signal != "SIGKILL" {
		t.Fatalf("after SIGKILL: restarts %d, last exit %+v", a.Restarts, a.LastExit)
	}

	code, out, _ = ctl(t, "stop", "-config", cfg, "a")
	if code != 0 || programStatus(t, cfg, "a").State != "stopped" {
		t.Fatalf("stop: %d %q", code, out)
	}
	code, out, _ = ctl(t, "start", "-config", cfg, "a")
	if code != 0 || !strings.Contains(out, "a: gen 4 serving") {
		t.Fatalf("start: %d %q", code, out)
	}

	write("crash")
	code, _, errs = ctl(t, "reload", "-config", cfg, "a")
	if code != 1 || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "exit status 2 before it was ready") {
		t.Fatalf("reload to a crashing binary: want exit 1 with the reason, have %d %q", code, errs)
	}
	if a = programStatus(t, cfg, "a"); a.Generation != 4 || a.State != "running" {
		t.Fatalf("after the rollback: %+v", a)
	}

	code, out, _ = ctl(t, "logs", "-config", cfg, "-n", "1000", "a")
	if code != 0 || !strings.Contains(out, "cannot open the database") || !strings.Contains(out, "gen=5") {
		t.Fatalf("logs: %d %q", code, out)
	}
	code, _, errs = ctl(t, "restart", "-config", cfg, "nope")
	if code != 1 || !strings.Contains(errs, `no such program: "nope"`) {
		t.Fatalf("restart nope: %d %q", code, errs)
	}

	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit %d", code)
	}
	code, _, errs = ctl(t, "status", "-config", cfg)
	if code != 1 || !strings.Contains(errs, "baton is not running") {
		t.Fatalf("status without baton: %d %q", code, errs)
	}
}

// baton SIGKILLed under POST load: every child is told (parent-death
// signal), drains and exits on its own; no acknowledged order is lost and
// nothing is left running.
func TestSIGKILLedBaton_childrenDrain(t *testing.T) {
	baton, dir, _, addr := runOrders(t)
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 32})
	load.WaitAcked(3000, waitLong)
	pids := childPIDs(baton.Output())

	baton.Signal(syscall.SIGKILL)
	baton.Wait(waitLong)
	for _, pid := range pids {
		if !proctest.WaitGone(pid, waitLong) {
			t.Fatalf("child %d still runs after baton was killed", pid)
		}
	}
	res := load.Stop()
	missing, err := loadgen.MissingOrders(filepath.Join(dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders lost", len(missing), len(res.Acked))
	}
	t.Logf("%d orders acknowledged, all written; %d requests failed once the socket was gone", len(res.Acked), res.FailedTotal())
}

// A child that writes 1 GiB to stdout: baton's memory stays bounded and
// its log files within their configured size.
func TestLogs_floodIsBounded(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fakeBlock("flood", "flood", `
  ready { delay = "0s" }
  restart { policy = "never" }
  log {
    file      = "logs/flood.log"
    max_size  = "1MB"
    max_files = 2
  }`)), 0o644)
	// A soft memory limit makes the collector keep up with the garbage
	// of 1 GiB of lines even on a busy machine, so that the peak measures
	// what baton holds, not how far the collector lagged; a leak of the
	// output would still take baton far past it.
	cmd := proctest.Self("baton", "GOMEMLIMIT=32MiB")
	cmd.Args = append(cmd.Args, "run", "-config", cfg)
	baton := proctest.Start(t, cmd)
	baton.WaitOutput("exited on its own: program=flood gen=1", 3*waitLong)
	if !strings.Contains(baton.Output(), `status="exit status 0"`) {
		t.Fatalf("the flood did not complete:\n%s", baton.Output())
	}
	hwm := peakRSS(t, baton.Cmd.Process.Pid)
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "flood.log*"))
	var total int64
	for _, f := range files {
		st, _ := os.Stat(f)
		if st.Size() > 1<<20 {
			t.Errorf("%s is %d bytes, above max_size", f, st.Size())
		}
		total += st.Size()
	}
	if len(files) != 3 {
		t.Errorf("want the file and 2 rotated ones, have %v", files)
	}
	baton.Signal(syscall.SIGTERM)
	baton.Wait(waitLong)
	if hwm > 100<<20 {
		t.Fatalf("baton's peak RSS is %d MiB after 1 GiB of output", hwm>>20)
	}
	t.Logf("1 GiB of output: baton peak RSS %d MiB, %d log files, %d bytes on disk", hwm>>20, len(files), total)
}

// peakRSS reads a process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// The serving child SIGKILLed at random moments under 16 POST clients, 20
// times, as the OOM killer would: baton restarts it each time, each new
// generation replays what the killed ones acknowledged from the journal
// beside the database, and once the last one has replayed, every
// acknowledged order is a row.
func TestRun_SIGKILLedChildUnderLoad_journalLosesNothing(t *testing.T) {
	orders := buildOrders(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
watch { enabled = false }
program "orders" {
  command = [%q]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "127.0.0.1:0" }
  restart {
    backoff     = "10ms"
    max_backoff = "20ms"
  }
}
`, orders)), 0o644)
	baton := startBaton(t, "run", "-config", cfg)
	baton.WaitOutput("ready: program=orders gen=1", waitLong)
	addr := programStatus(t, cfg, "orders").Listeners[0].Address
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16})
	defer load.Stop()
	const kills = 20
	for gen := 1; gen <= kills; gen++ {
		if !load.WaitAcked(load.Acked()+50+rng.Int64N(600), waitLong) {
			t.Fatalf("kill %d: the load stalled; log:\n%s", gen, baton.Output())
		}
		syscall.Kill(programStatus(t, cfg, "orders").PID, syscall.SIGKILL)
		baton.WaitOutput(fmt.Sprintf("ready: program=orders gen=%d", gen+1), waitLong)
	}
	// The last generation's replay of what the killed ones left (some
	// were killed in the middle of their own replay).
	baton.WaitOutput(fmt.Sprintf("journal: replay of dead writers done: gen=%d ", kills+1), waitLong)
	load.WaitAcked(load.Acked()+100, waitLong)
	res := load.Stop()
	baton.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton: want exit 0, have %d %s; log:\n%s", code, sig, baton.Output())
	}

	missing, err := loadgen.MissingOrders(filepath.Join(dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders lost after %d SIGKILLs, e.g. %s", len(missing), len(res.Acked), kills, missing[0])
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "orders.journal", "*")); len(left) > 0 {
		t.Fatalf("everything was written, yet the journal keeps %v", left)
	}
	t.Logf("%d SIGKILLs: %d orders acknowledged, all written; %d requests failed (%v)", kills, len(res.Acked), res.FailedTotal(), res.Failed)
}
