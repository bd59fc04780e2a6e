package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/control"
	"golang.org/x/sys/unix"
)

var (
	batonBuilds   sync.Mutex
	batonBinaries = map[string]string{}
)

// buildBaton builds baton with version set at link time, once per version
// for the package's tests: baton upgrade replaces a real binary.
func buildBaton(t *testing.T, version string) string {
	t.Helper()
	buildOrders(t) // makes buildDir
	batonBuilds.Lock()
	defer batonBuilds.Unlock()
	if path, ok := batonBinaries[version]; ok {
		return path
	}
	path := filepath.Join(buildDir, "baton-"+version)
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", path, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/baton: %v\n%s", err, out)
	}
	batonBinaries[version] = path
	return path
}

// install puts the file src at dst the way a deploy does: written next
// to it, then renamed over it (the running binary's inode stays intact).
func install(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// notifyListener is a service manager's notify socket: it reads what
// baton says, with the sender's pid.
type notifyListener struct {
	t    *testing.T
	path string
	c    *net.UnixConn
}

func listenNotifySocket(t *testing.T, dir string) *notifyListener {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	raw, _ := c.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	return &notifyListener{t: t, path: path, c: c}
}

// next returns the next message that contains want, and its sender's pid.
func (n *notifyListener) next(want string) (string, int) {
	n.t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, 1024)
	for {
		n.c.SetReadDeadline(time.Now().Add(waitLong))
		nb, noob, _, _, err := n.c.ReadMsgUnix(buf, oob)
		if err != nil {
			n.t.Fatalf("waiting for %s from baton: %v", want, err)
		}
		m := string(buf[:nb])
		if !strings.Contains(m, want) {
			continue
		}
		pid := 0
		if msgs, err := unix.ParseSocketControlMessage(oob[:noob]); err == nil {
			for _, cm := range msgs {
				if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
					pid = int(cred.Pid)
				}
			}
		}
		return m, pid
	}
}

// upgradeRig is baton, built for real, running examples/orders from a
// binary that the test replaces, with a notify socket of a service
// manager.
type upgradeRig struct {
	t       *testing.T
	dir     string
	cfg     string
	bin     string // where baton runs from
	baton   *proctest.Proc
	addr    string
	client  *control.Client
	notify  *notifyListener
	current string // the version of the binary that runs
	metrics string // the address of /metrics and /readyz, if any
}

// slowStart makes each generation of examples/orders wait a second and a
// half before it starts once the file "slow" exists in the config's
// directory: a shell sleeps, then execs the example (same pid, same
// descriptors).
const slowStart = `"/bin/sh", "-c", "if [ -e slow ]; then sleep 1.5; fi; exec \"$0\"", `

func startUpgradeRig(t *testing.T, command string) *upgradeRig {
	t.Helper()
	orders := buildOrders(t)
	return startUpgradeRigWith(t, fmt.Sprintf(`
metrics { address = %q }
program "orders" {
  command = [%s%q]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "127.0.0.1:0" }
  liveness { watchdog = "1s" }
}
`, proctest.FreeAddr(t), command, orders), "")
}

// pollReadyz asks GET /readyz at addr until stop is closed, as a load
// balancer does, and returns the answers that were not 200.
func pollReadyz(addr string, stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		var bad []string
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for n := 0; ; n++ {
			select {
			case <-stop:
				if n == 0 {
					bad = append(bad, "never asked")
				}
				out <- bad
				return
			case <-time.After(10 * time.Millisecond): // the pace of the checks, not a synchronisation
			}
			resp, err := c.Get("http://" + addr + "/readyz")
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad = append(bad, resp.Status)
			}
		}
	}()
	return out
}

// startUpgradeRigWith runs baton with config, in which "orders" serves
// examples/orders, and returns once the log has the line wait, or, for
// "", once orders is ready and baton told systemd READY=1.
func startUpgradeRigWith(t *testing.T, config, wait string) *upgradeRig {
	t.Helper()
	r := &upgradeRig{t: t, dir: t.TempDir(), current: "v-one"}
	r.cfg = filepath.Join(r.dir, "config.hcl")
	os.WriteFile(r.cfg, []byte(config), 0o644)
	if m := regexp.MustCompile(`metrics \{ address = "([^"]+)" \}`).FindStringSubmatch(config); m != nil {
		r.metrics = m[1]
	}
	r.bin = filepath.Join(r.dir, "baton")
	install(t, buildBaton(t, "v-one"), r.bin)
	r.notify = listenNotifySocket(t, r.dir)
	for attempt := 1; ; attempt++ {
		cmd := exec.Command(r.bin, "run", "-config", r.cfg)
		// A watchdog of 1 s: a ping every 500 ms, which the notify
		// socket's queue holds for minutes.
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+r.notify.path, "WATCHDOG_USEC=1000000")
		r.baton = proctest.Start(t, cmd)
		if r.metrics == "" || attempt == 5 {
			break
		}
		// The metrics address was free when it was chosen; another
		// process of this busy machine may have taken it since.
		if _, ok := r.baton.Out.Wait("baton started", 1, waitLong); ok || !strings.Contains(r.baton.Output(), "address already in use") {
			break
		}
		r.baton.Wait(waitLong)
		old := r.metrics
		r.metrics = proctest.FreeAddr(t)
		config = strings.Replace(config, old, r.metrics, 1)
		os.WriteFile(r.cfg, []byte(config), 0o644)
	}
	r.client = control.NewClient(filepath.Join(r.dir, ".baton", "control.sock"))
	if wait != "" {
		r.baton.WaitOutput(wait, waitLong)
		return r
	}
	m := reAddr.FindStringSubmatch(r.baton.WaitOutput("serving: ", waitLong))
	if m == nil {
		t.Fatalf("no address in the log:\n%s", r.baton.Output())
	}
	r.addr = m[1]
	r.baton.WaitOutput("ready: program=orders gen=1", waitLong)
	if _, pid := r.notify.next("READY=1"); pid != r.pid() {
		t.Fatalf("READY=1 from pid %d, want baton's %d", pid, r.pid())
	}
	return r
}

func (r *upgradeRig) pid() int { return r.baton.Cmd.Process.Pid }

// upgrade runs "baton upgrade" with the CLI of binary cli and returns its
// exit code and output.
func (r *upgradeRig) upgrade(cli string) (int, string) {
	r.t.Helper()
	out, err := exec.Command(cli, "upgrade", "-config", r.cfg).CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			r.t.Fatalf("baton upgrade: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, string(out)
}

func (r *upgradeRig) status() control.ProgramStatus {
	r.t.Helper()
	return r.statusOf("orders")
}

func (r *upgradeRig) statusOf(name string) control.ProgramStatus {
	r.t.Helper()
	st, err := r.client.Status(context.Background())
	if err == nil {
		for _, p := range st.Programs {
			if p.Name == name {
				return p
			}
		}
	}
	r.t.Fatalf("status of %s: %+v %v; log:\n%s", name, st, err, r.baton.Output())
	return control.ProgramStatus{}
}

func (r *upgradeRig) upgradeStatus() control.UpgradeStatus {
	r.t.Helper()
	st, err := r.client.UpgradeStatus(context.Background())
	if err != nil {
		r.t.Fatalf("upgrade status: %v", err)
	}
	return st
}

// stop stops baton with SIGTERM and checks it exits 0 with no child left.
func (r *upgradeRig) stop() {
	r.t.Helper()
	r.baton.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(r.baton.Wait(waitLong)); code != 0 {
		r.t.Fatalf("baton: want exit 0, have %d %s; log:\n%s", code, sig, r.baton.Output())
	}
	for _, pid := range childPIDs(r.baton.Output()) {
		if syscall.Kill(pid, 0) == nil {
			r.t.Errorf("child %d is still running after baton exited", pid)
		}
	}
}

// counters is what must not change across an upgrade.
func counters(st control.ProgramStatus) string {
	var exit string
	var started int64
	if st.StartedAt != nil {
		started = st.StartedAt.UnixNano()
	}
	if e := st.LastExit; e != nil {
		exit = fmt.Sprintf("gen %d pid %d code %d at %s", e.Generation, e.PID, e.Code, e.At.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("state=%s gen=%d pid=%d started=%v restarts=%d handovers=%d rollbacks=%d reverts=%d liveness_failures=%d memory_replacements=%d last_exit=%q",
		st.State, st.Generation, st.PID, started, st.Restarts, st.Handovers, st.Rollbacks, st.Reverts, st.LivenessFailures, st.MemoryReplacements, exit)
}

// The promise of baton upgrade: ten upgrades of baton itself, to a new
// binary and back, under 32 keep-alive clients POSTing orders. Not one
// request fails and not one acknowledged order is missing; baton keeps
// its pid (systemd's MAINPID: RELOADING=1 then READY=1 from that pid
// each time, and the watchdog's pings after it), the program's generation keeps its pid, and status goes on
// where it was: same generation, start time and counters, and the
// handover made between two upgrades is counted once. The output ring
// (baton logs) and the generation adopted in the middle go on too: the
// generation that served before the handover is reaped by an image that
// did not start it, with its exit status. A load balancer's /readyz
// checks, on the metrics listener, never fail meanwhile, and the
// metrics' histograms go on.
func TestUpgrade_tenUnderLoad(t *testing.T) {
	r := startUpgradeRig(t, "")
	versions := []string{"v-one", "v-two"}
	buildBaton(t, "v-two")
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: r.addr, Clients: 32})
	stopPolling := make(chan struct{})
	readyz := pollReadyz(r.metrics, stopPolling)
	before := r.status()
	var took []time.Duration
	for i := 1; i <= 10; i++ {
		if !load.WaitAcked(load.Acked()+300, waitLong) {
			t.Fatalf("load stalled before upgrade %d; failures %d; log:\n%s", i, load.Failures(), r.baton.Output())
		}
		next := versions[i%2]
		install(t, buildBaton(t, next), r.bin)
		start := time.Now()
		code, out := r.upgrade(r.bin)
		took = append(took, time.Since(start).Round(time.Millisecond))
		want := fmt.Sprintf("baton upgraded in place: %s → %s (pid %d, upgrade %d)", r.current, next, r.pid(), i)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("upgrade %d: want exit 0 and %q, have %d %q; log:\n%s", i, want, code, out, r.baton.Output())
		}
		r.current = next
		if _, pid := r.notify.next("RELOADING=1"); pid != r.pid() {
			t.Fatalf("upgrade %d: RELOADING=1 from pid %d, want baton's %d", i, pid, r.pid())
		}
		if _, pid := r.notify.next("READY=1"); pid != r.pid() {
			t.Fatalf("upgrade %d: READY=1 from pid %d, want baton's %d", i, pid, r.pid())
		}
		// The new image pings systemd's watchdog, which the first
		// image's environment gave.
		if _, pid := r.notify.next("WATCHDOG=1"); pid != r.pid() {
			t.Fatalf("upgrade %d: WATCHDOG=1 from pid %d, want baton's %d", i, pid, r.pid())
		}
		after := r.status()
		if counters(after) != counters(before) {
			t.Fatalf("upgrade %d changed the program's status:\nbefore %s\nafter  %s", i, counters(before), counters(after))
		}
		if st := r.upgradeStatus(); st.Upgrades != i || st.PID != r.pid() || st.Version != next || st.Upgrading {
			t.Fatalf("upgrade %d: upgrade status %+v", i, st)
		}
		if i == 5 {
			// A handover between two upgrades: the new image hands over
			// the generation the old one started, and reaps it.
			if !load.WaitAcked(load.Acked()+300, waitLong) {
				t.Fatalf("load stalled before the handover; log:\n%s", r.baton.Output())
			}
			handover(t, r.baton, 2)
			before = r.status()
			if before.Handovers != 1 || before.Generation != 2 || before.LastExit == nil || before.LastExit.Generation != 1 || before.LastExit.Code != 0 {
				t.Fatalf("after the handover: %+v, last exit %+v", before, before.LastExit)
			}
			continue
		}
		before = after
	}
	load.WaitAcked(load.Acked()+300, waitLong)
	res := load.Stop()
	close(stopPolling)
	if bad := <-readyz; len(bad) > 0 {
		t.Errorf("/readyz failed during the upgrades: %d times: %v", len(bad), bad)
	}
	// The metrics listener went through every image too.
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The handover's duration too: observed by the image between the
	// 5th and the 6th upgrade, carried through the five after it.
	for _, want := range []string{`baton_program_handovers_total{program="orders"} 1`, `baton_handover_duration_seconds_count{program="orders"} 1`, `baton_handover_phase_seconds_count{phase="spawn",program="orders"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics after the upgrades: no %s in\n%s", want, metrics)
		}
	}

	// The output ring went through every image: gen 1's first lines are
	// still there.
	body, err := r.client.Logs(context.Background(), "orders", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(body)
	body.Close()
	if !regexp.MustCompile(`gen=1 .*serving`).Match(logs) {
		t.Errorf("baton logs lost the first generation's lines:\n%s", logs)
	}
	r.stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	missing, err := loadgen.MissingOrders(filepath.Join(r.dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders missing, e.g. %s", len(missing), len(res.Acked), missing[0])
	}
	if pids := childPIDs(r.baton.Output()); len(pids) != 2 {
		t.Fatalf("want 2 generations started in all (one handover), have %v", pids)
	}
	if n := strings.Count(r.baton.Output(), "baton upgraded in place"); n != 10 {
		t.Fatalf("want 10 images that upgraded in place, have %d", n)
	}
	t.Logf("%d requests, %d orders acknowledged and written, 0 failed, 10 upgrades of baton and 1 handover", res.Requests, len(res.Acked))
	t.Logf("baton upgrade, command to answer: %v; exec to the new image's first line: %v", spans(took), spans(execGaps(r.baton.Output())))
}

// execGaps returns, for each upgrade in the log, the time from the old
// image's last line ("replacing baton in place") to the new image's
// first ("baton upgraded in place").
func execGaps(log string) []time.Duration {
	var gaps []time.Duration
	var from time.Time
	for _, line := range strings.Split(log, "\n") {
		ts, _, _ := strings.Cut(line, " ")
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		switch {
		case err != nil:
		case strings.Contains(line, "upgrade: replacing baton in place"):
			from = at
		case strings.Contains(line, "baton upgraded in place") && !from.IsZero():
			gaps = append(gaps, at.Sub(from))
		}
	}
	return gaps
}

// spans renders durations as "min … median … max (n)".
func spans(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v, median %v, max %v (%d)", s[0], s[len(s)/2], s[len(s)-1], len(s))
}

// Upgrades that must change nothing: a binary on disk that rejects the
// config, one that does not take this baton's state, and one that passes
// its checks but cannot be executed (here it replaces itself with a text
// file during its check). baton upgrade exits 1 and says why; baton runs
// on with the same pid, generation and counters, tells systemd READY=1
// after its RELOADING=1, and still works: SIGHUP hands over (its signals
// came back after the failed exec), and a good binary upgrades.
func TestUpgrade_failuresChangeNothing(t *testing.T) {
	r := startUpgradeRig(t, "")
	cli := buildBaton(t, "v-one")
	before := r.status()
	for _, tc := range []struct {
		name, script, want string
	}{
		{"check fails", `case "$1" in
version) echo '{"version":"v-broken","upgrade_format":1}';;
*) echo "this build cannot read the config" >&2; exit 1;;
esac`, "rejects the config"},
		{"another state format", `echo '{"version":"v-future","upgrade_format":99}'`, "takes state format 99"},
		{"exec fails", `case "$1" in
version) echo '{"version":"v-vanishing","upgrade_format":1}';;
check) printf 'not a program\n' > "$0.tmp" && chmod -x "$0.tmp" && mv "$0.tmp" "$0";;
esac`, "exec "},
	} {
		os.WriteFile(r.bin+".new", []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755)
		os.Rename(r.bin+".new", r.bin)
		code, out := r.upgrade(cli)
		if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "baton runs on as it was") {
			t.Fatalf("%s: want exit 1 and %q, have %d %q", tc.name, tc.want, code, out)
		}
		if _, pid := r.notify.next("RELOADING=1"); pid != r.pid() {
			t.Fatalf("%s: RELOADING=1 from pid %d", tc.name, pid)
		}
		if _, pid := r.notify.next("READY=1"); pid != r.pid() {
			t.Fatalf("%s: READY=1 from pid %d", tc.name, pid)
		}
		if after := r.status(); counters(after) != counters(before) {
			t.Fatalf("%s changed the program's status:\nbefore %s\nafter  %s", tc.name, counters(before), counters(after))
		}
		st := r.upgradeStatus()
		if st.Upgrades != 0 || st.Version != "v-one" || st.PID != r.pid() || !strings.Contains(st.LastError, tc.want) {
			t.Fatalf("%s: upgrade status %+v", tc.name, st)
		}
		resp, err := http.Get("http://" + r.addr + "/healthz")
		if err != nil {
			t.Fatalf("%s: the program does not answer: %v", tc.name, err)
		}
		resp.Body.Close()
	}
	// The exec that failed paused everything and resumed it: the readers
	// of the generation and baton's signals work, a handover completes.
	handover(t, r.baton, 2)
	if strings.Contains(r.baton.Output(), "baton upgraded in place") {
		t.Fatalf("a failed upgrade replaced baton; log:\n%s", r.baton.Output())
	}
	install(t, buildBaton(t, "v-two"), r.bin)
	if code, out := r.upgrade(r.bin); code != 0 || !strings.Contains(out, "v-one → v-two") {
		t.Fatalf("a good upgrade after the failed ones: %d %q; log:\n%s", code, out, r.baton.Output())
	}
	r.stop()
}

// An upgrade asked for during a handover waits for it: the new
// generation becomes ready (here after a second and a half), the
// old one is told to stop, and only then does baton exec; the new image
// serves with the new generation and reaps the old one. Under POST load,
// nothing fails and nothing is lost. Meanwhile a restart is refused with
// a clear answer instead of starting another handover, and a SIGHUP is
// held: the new image reloads, and hands over once more.
func TestUpgrade_duringAHandover(t *testing.T) {
	r := startUpgradeRig(t, slowStart)
	os.WriteFile(filepath.Join(r.dir, "slow"), nil, 0o644)
	buildBaton(t, "v-two")
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: r.addr, Clients: 8})
	if !load.WaitAcked(300, waitLong) {
		t.Fatalf("no load; log:\n%s", r.baton.Output())
	}
	r.baton.Signal(syscall.SIGHUP)
	r.baton.WaitOutput("starting: program=orders gen=2", waitLong)
	install(t, buildBaton(t, "v-two"), r.bin)
	done := make(chan string, 1)
	go func() {
		code, out := r.upgrade(r.bin)
		done <- fmt.Sprintf("%d %s", code, out)
	}()
	r.baton.WaitOutput("upgrade: waiting for the handover under way", waitLong)
	res, err := r.client.Restart(context.Background(), "orders")
	if err != nil || !strings.Contains(res.Error, "baton is upgrading itself") {
		t.Fatalf("a restart during the upgrade: want the upgrade's answer, have %+v %v", res, err)
	}
	// A SIGHUP now is held, and the new image reloads.
	r.baton.Signal(syscall.SIGHUP)
	r.baton.WaitOutput("reload held until the upgrade is over", waitLong)
	if out := <-done; !strings.HasPrefix(out, "0 ") || !strings.Contains(out, "v-one → v-two") {
		t.Fatalf("upgrade: %s; log:\n%s", out, r.baton.Output())
	}
	out := r.baton.Output()
	ready := strings.Index(out, "handover: new generation ready")
	execed := strings.Index(out, "upgrade: replacing baton in place")
	if ready < 0 || execed < ready {
		t.Fatalf("the exec did not wait for the handover; log:\n%s", out)
	}
	r.baton.WaitOutput("generation exited: program=orders gen=1 ", waitLong)
	// The held SIGHUP: the new image hands over once more.
	r.baton.WaitOutput("generation exited: program=orders gen=2 ", waitLong)
	if !strings.Contains(r.baton.Output()[execed:], "starting: program=orders gen=3 pid=") {
		t.Fatalf("the held reload did not reach the new image; log:\n%s", r.baton.Output())
	}
	if !load.WaitAcked(load.Acked()+300, waitLong) {
		t.Fatalf("load stalled after the upgrade; log:\n%s", r.baton.Output())
	}
	res2 := load.Stop()
	st := r.status()
	if st.Generation != 3 || st.Handovers != 2 || st.LastExit == nil || st.LastExit.Generation != 2 || st.LastExit.Code != 0 {
		t.Fatalf("after the upgrade and the held reload: %s", counters(st))
	}
	r.stop()
	if res2.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res2.FailedTotal(), res2.Requests, res2.Failed, res2.Examples)
	}
	missing, err := loadgen.MissingOrders(filepath.Join(r.dir, "orders.db"), res2.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders missing, e.g. %s", len(missing), len(res2.Acked), missing[0])
	}
}

// What the new image goes on with beyond the generations: the health of
// the serving generation and the start order. A one-shot migration runs
// (it waits for a file) when the upgrade is asked for, with the program
// that starts after it waiting: the upgrade waits for the one-shot, which
// completes while the waiting program is already paused, and the new
// image starts the waiting program. Then the serving generation hangs
// (SIGSTOP): the new image's watchdog, armed for the generation it
// adopted, replaces it by a handover and kills it (SIGQUIT first, for
// its stacks).
func TestUpgrade_healthAndStartOrderGoOn(t *testing.T) {
	orders := buildOrders(t)
	r := startUpgradeRigWith(t, fmt.Sprintf(`
program "migrate" {
  type    = "oneshot"
  command = ["/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; exec \"$0\" migrate", %q]
  env     = { ORDERS_DB = "orders.db" }
}
program "orders" {
  command = [%q]
  env     = { ORDERS_DB = "orders.db" }
  after   = ["migrate"]
  listener "http" { address = "127.0.0.1:0" }
  liveness { watchdog = "1s" }
  stop { timeout = "1s" }
}
`, orders, orders), "starting: program=migrate gen=1")
	install(t, buildBaton(t, "v-two"), r.bin)
	done := make(chan string, 1)
	go func() {
		code, out := r.upgrade(r.bin)
		done <- fmt.Sprintf("%d %s", code, out)
	}()
	r.baton.WaitOutput("upgrade: waiting for the one-shot run under way", waitLong)
	if st := r.statusOf("orders"); st.State != control.StateWaiting {
		t.Fatalf("orders before the migration: %+v", st)
	}
	os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o644)
	if out := <-done; !strings.HasPrefix(out, "0 ") {
		t.Fatalf("upgrade: %s; log:\n%s", out, r.baton.Output())
	}
	r.baton.WaitOutput("ready: program=orders gen=1", waitLong)
	if st := r.statusOf("migrate"); st.State != control.StateExited || !strings.Contains(st.Reason, "completed") {
		t.Fatalf("migrate after the upgrade: %+v", st)
	}

	// The generation adopted by the next upgrade hangs.
	install(t, buildBaton(t, "v-one"), r.bin)
	if code, out := r.upgrade(r.bin); code != 0 {
		t.Fatalf("second upgrade: %d %s", code, out)
	}
	hung := r.statusOf("orders").PID
	syscall.Kill(hung, syscall.SIGSTOP)
	r.baton.WaitOutput("replacing the serving generation by a handover", waitLong)
	r.baton.WaitOutput("generation exited: program=orders gen=1 ", waitLong)
	st := r.statusOf("orders")
	if st.Generation != 2 || st.LivenessFailures != 1 || st.LastExit == nil || st.LastExit.Signal != "SIGKILL" {
		t.Fatalf("after the hang: %s, last exit %+v", counters(st), st.LastExit)
	}
	if !strings.Contains(r.baton.Output(), "SIGQUIT") {
		t.Fatalf("the hung generation got no SIGQUIT before its SIGKILL; log:\n%s", r.baton.Output())
	}
	r.stop()
}

// baton logs -f goes on through two upgrades of baton: the stream the
// old image cut is asked for again from the line after the last one
// printed, and a program that prints a numbered line every 10 ms shows
// every number once, in order, before, between and after the upgrades.
// When baton stops, the follower ends with exit 0.
func TestUpgrade_logsFollowGoesOn(t *testing.T) {
	r := startUpgradeRigWith(t, fmt.Sprintf(`
program "orders" {
  command = [%q]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "127.0.0.1:0" }
}
program "ticker" {
  command = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.01; done"]
  listener "t" { address = "127.0.0.1:0" }
  ready { delay = "10ms" }
}
`, buildOrders(t)), "")
	follower := exec.Command(r.bin, "logs", "-f", "-n", "1", "-config", r.cfg, "ticker")
	out, err := follower.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	follower.Stderr = &stderr
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- follower.Wait() }()
	t.Cleanup(func() {
		follower.Process.Kill()
		<-exited
	})
	ticks := make(chan int, 10000)
	go func() {
		defer close(ticks)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, num, ok := strings.Cut(sc.Text(), " tick "); ok {
				n, _ := strconv.Atoi(num)
				ticks <- n
			}
		}
	}()
	first, prev := 0, 0
	read := func(lines int) {
		t.Helper()
		for range lines {
			n, ok := <-ticks
			if !ok {
				t.Fatalf("baton logs -f ended after tick %d (%s); baton's log:\n%s", prev, stderr.String(), r.baton.Output())
			}
			if prev != 0 && n != prev+1 {
				t.Fatalf("after tick %d came tick %d", prev, n)
			}
			if first == 0 {
				first = n
			}
			prev = n
		}
	}
	read(20)
	for i, next := range []string{"v-two", "v-one"} {
		install(t, buildBaton(t, next), r.bin)
		if code, out := r.upgrade(r.bin); code != 0 {
			t.Fatalf("upgrade %d: %d %s", i+1, code, out)
		}
		read(50) // past the exec, from the new image
	}
	r.stop()
	for range ticks { // what was printed before the end
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("baton logs -f: want exit 0 when baton stops, have %v: %s", err, stderr.String())
		}
	case <-time.After(waitLong):
		t.Fatal("baton logs -f still runs after baton stopped")
	}
	t.Logf("ticks %d to %d at least, each once, across 2 upgrades", first, prev)
}

// A new image of baton that cannot go on (here a binary that passes the
// upgrade's checks, then exits 1 when it is run with the state): baton's
// pid ends, baton upgrade says so (the control socket refuses: across a
// good exec it never does), each program gets its parent-death signal
// and drains, and every order the example acknowledged under POST load
// is a row. New requests fail once nobody listens: nothing is left to
// hand over to.
func TestUpgrade_newImageThatCannotGoOn(t *testing.T) {
	r := startUpgradeRig(t, "")
	cli := buildBaton(t, "v-one")
	gen := r.status().PID
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: r.addr, Clients: 8})
	if !load.WaitAcked(300, waitLong) {
		t.Fatalf("no load; log:\n%s", r.baton.Output())
	}
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in
run) echo "this image cannot go on" >&2; exit 1;;
*) exec %q "$@";;
esac
`, cli)
	os.WriteFile(r.bin+".new", []byte(script), 0o755)
	os.Rename(r.bin+".new", r.bin)
	code, out := r.upgrade(cli)
	if code != 1 || !strings.Contains(out, "the new image of baton ended before it answered") {
		t.Fatalf("baton upgrade: want exit 1 saying the new image ended, have %d %q", code, out)
	}
	if code, sig := proctest.ExitCode(r.baton.Wait(waitLong)); code != 1 {
		t.Fatalf("baton after the exec: want exit 1 (the new image's), have %d %s; log:\n%s", code, sig, r.baton.Output())
	}
	if !proctest.WaitGone(gen, waitLong) {
		t.Fatalf("generation %d still runs after baton's image ended", gen)
	}
	res := load.Stop()
	missing, err := loadgen.MissingOrders(filepath.Join(r.dir, "orders.db"), res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 0 {
		t.Fatalf("%d of %d acknowledged orders are not rows: %v", len(missing), len(res.Acked), missing[:min(5, len(missing))])
	}
	t.Logf("baton upgrade said %d %q; %d orders acknowledged, all rows; %d requests failed after (%v)", code, strings.TrimSpace(out), len(res.Acked), res.FailedTotal(), res.Failed)
}

// Signals aimed at upgrades: SIGUSR2 every millisecond (each one asks
// for an upgrade, so upgrades follow one another, and some signals land
// during an exec, when the old image ignores them and the new one has
// not caught them yet) and SIGHUP every 20 (a reload, held while an
// upgrade runs, once however often it is asked for). baton survives
// every exec with its pid and upgrades several times; once the storm
// ends, the held reload hands over. Under POST load nothing fails and
// nothing is lost; baton then stops with exit 0 and no child left.
func TestUpgrade_signalStorm(t *testing.T) {
	r := startUpgradeRig(t, "")
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: r.addr, Clients: 8})
	load.WaitAcked(200, waitLong)
	pid := r.pid()
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		tick := time.NewTicker(time.Millisecond) // the storm's pace
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-stop:
				sent <- n
				return
			case <-tick.C:
			}
			n++
			sig := syscall.SIGUSR2
			if n%20 == 0 {
				sig = syscall.SIGHUP
			}
			syscall.Kill(pid, sig)
		}
	}()
	// Until the storm has caused three upgrades.
	if _, ok := r.baton.Out.Wait("baton upgraded in place", 3, waitLong); !ok {
		close(stop)
		t.Fatalf("fewer than 3 upgrades in the storm; log:\n%s", r.baton.Output())
	}
	close(stop)
	signals := <-sent
	// The reload held by the last upgrade is applied after it.
	if _, ok := r.baton.Out.Wait("handover: new generation ready", 1, waitLong); !ok {
		t.Fatalf("no handover after the storm; log:\n%s", r.baton.Output())
	}
	if r.pid() != pid || r.baton.Cmd.ProcessState != nil {
		t.Fatalf("baton did not survive the storm; log:\n%s", r.baton.Output())
	}
	st := r.upgradeStatus()
	if held := strings.Count(r.baton.Output(), "reload held until the upgrade is over"); held > st.Upgrades+1 {
		t.Errorf("%d reloads held for %d upgrades: want at most one each", held, st.Upgrades)
	}
	load.WaitAcked(load.Acked()+200, waitLong)
	res := load.Stop()
	r.stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	missing, err := loadgen.MissingOrders(filepath.Join(r.dir, "orders.db"), res.Acked)
	if err != nil || len(missing) != 0 {
		t.Fatalf("%d of %d acknowledged orders missing (%v)", len(missing), len(res.Acked), err)
	}
	t.Logf("%d signals; %d upgrades, %d handovers; %d requests, 0 failed, %d orders, all rows",
		signals, st.Upgrades, strings.Count(r.baton.Output(), "handover: new generation ready"), res.Requests, len(res.Acked))
}
