package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/procfs"
)

// The harness in a seconds-long smoke mode: it builds, runs every mode
// and reports. Only behaviour is asserted, never a timing: the figures of
// a busy CI machine mean nothing.

func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds baton and examples/orders and runs them under load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := setup(ctx, testWriter{t}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()

	t.Run("compare", func(t *testing.T) {
		opt := options{Duration: 2 * time.Second, Handovers: 1, Clients: 4, Slice: time.Second}
		var emitted []string
		rs, err := compare(ctx, e, opt, func(r *scenarioResult) { emitted = append(emitted, r.Scenario) })
		if err != nil {
			t.Fatal(err)
		}
		if have, want := strings.Join(emitted, ","), "direct,naive,baton"; have != want {
			t.Fatalf("want scenarios %s, have %s", want, have)
		}
		var out strings.Builder
		printComparison(&out, rs)
		t.Log("\n" + out.String())
		for _, r := range rs {
			if r.Requests == 0 || r.OK == 0 {
				t.Errorf("%s: no request answered: %+v", r.Scenario, r)
			}
		}
		b := rs[2]
		if b.Handovers != 1 {
			t.Errorf("baton: want 1 handover, have %d", b.Handovers)
		}
		if b.Failed != 0 {
			t.Errorf("baton: want 0 failed requests, have %d: %v", b.Failed, b.FailedByKind)
		}
		if b.Acked == 0 || b.LostWrites != 0 {
			t.Errorf("baton: want 0 lost writes of some acknowledged, have %d of %d", b.LostWrites, b.Acked)
		}
		if b.Baton == nil || b.Baton.RSSMiB == 0 || b.Baton.FDs == 0 || b.Baton.Goroutines == 0 {
			t.Errorf("baton: want its RSS, fds and goroutines, have %+v", b.Baton)
		}
	})

	var bins *peerBins // built by the first part that needs them
	peers := func(t *testing.T) *peerBins {
		if bins == nil {
			bins = peerBinsOrSkip(ctx, t, e)
		}
		return bins
	}
	t.Run("peers", func(t *testing.T) {
		bins := peers(t)
		var systems []peerSystem
		for _, s := range peerSystems() {
			if s.name != "air" { // air's build fetches and compiles much more: the bench command runs it
				systems = append(systems, s)
			}
		}
		opt := options{Duration: time.Second, Handovers: 1, Clients: 4, Runs: 1}
		var emitted []string
		rs, err := comparePeers(ctx, e, bins, systems, opt, func(r *peerResult) { emitted = append(emitted, r.System) })
		if err != nil {
			t.Fatal(err)
		}
		if have, want := strings.Join(emitted, ","), "direct,baton,tableflip,tableflip-drain,overseer"; have != want {
			t.Fatalf("want systems %s, have %s", want, have)
		}
		var out strings.Builder
		printPeers(&out, opt, rs)
		t.Log("\n" + out.String())
		for _, r := range rs {
			if r.OK == 0 {
				t.Errorf("%s: no request answered: %+v", r.System, r)
			}
			restarts := 1
			if r.System == "direct" {
				restarts = 0
			}
			if r.Restarts != restarts || r.TriggerToServing.N != restarts || (restarts > 0 && r.TriggerToServing.P50 <= 0) {
				t.Errorf("%s: want %d restarts, each timed, have %d and %+v", r.System, restarts, r.Restarts, r.TriggerToServing)
			}
			// Every new process gave its times, in their order: the
			// answer came after its start-up.
			if sp := r.Split; restarts > 0 && (sp == nil || sp.ToInit.P50 <= 0 || sp.ToStartup.P50 < 0 || sp.Startup.P50 <= 0 || sp.After.P50 <= 0) {
				t.Errorf("%s: want trigger→serving in parts, each after the one before, have %+v", r.System, sp)
			}
			if (r.System == "baton" || r.System == "direct") && r.Failed != 0 {
				t.Errorf("%s: want 0 failed requests, have %d: %v", r.System, r.Failed, r.FailedByKind)
			}
		}
		// No process of the peers outlives the run.
		if left := leftovers(t, bins); len(left) > 0 {
			t.Errorf("processes still run: %v", left)
		}
	})

	t.Run("devloop", func(t *testing.T) {
		bins := peers(t)
		systems := devSystems(nil, []string{"go-build", "baton-dev"})
		rs, err := devLoop(ctx, e, bins, systems, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		printDevLoop(&out, rs)
		t.Log("\n" + out.String())
		var names []string
		for _, r := range rs {
			names = append(names, r.System)
			if r.Changes != 1 || r.SaveToServing.P50 <= 0 {
				t.Errorf("%s: want 1 change timed, have %+v", r.System, r)
			}
			if strings.HasPrefix(r.System, "baton-dev") && (r.Build.N != 1 || r.Ready.N != 1 || r.RefusedWindow.Max != 0) {
				t.Errorf("%s: want its own build and ready times and no refused probe, have %+v", r.System, r)
			}
		}
		if have, want := strings.Join(names, ","), "go-build,baton-dev,baton-dev-w"; have != want {
			t.Errorf("want systems %s, have %s", want, have)
		}
	})

	t.Run("journal", func(t *testing.T) {
		opt := options{Duration: 2 * time.Second, Clients: 4, Slice: time.Second, Journal: true}
		rs, err := compare(ctx, e, opt, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		printJournal(&out, rs)
		t.Log("\n" + out.String())
		if len(rs) != 2 || rs[0].Scenario != "unjournaled" || rs[1].Scenario != "journaled" {
			t.Fatalf("want unjournaled and journaled, have %d results", len(rs))
		}
		for _, r := range rs {
			if r.OK == 0 || r.Acked == 0 || r.LostWrites != 0 || r.Handovers != 0 || r.ExitCode != 0 {
				t.Errorf("%s: want requests answered, 0 lost writes, no restart, exit 0; have %+v", r.Scenario, r)
			}
		}
		if rs[1].RPSRatio == 0 || rs[1].P99Ratio == 0 {
			t.Errorf("journaled: want ratios against unjournaled, have %+v", rs[1])
		}
		// The journaled example made its journal beside its database, and
		// emptied it at its graceful stop; the other made none.
		if ents, err := os.ReadDir(filepath.Join(e.work, "journaled", "orders.journal")); err != nil || len(ents) != 0 {
			t.Errorf("journaled: want an empty journal after the stop, have %d files (%v)", len(ents), err)
		}
		if _, err := os.Stat(filepath.Join(e.work, "unjournaled", "orders.journal")); !os.IsNotExist(err) {
			t.Errorf("unjournaled: want no journal, have %v", err)
		}
		if !strings.Contains(out.String(), "journaled against the targets") {
			t.Errorf("no targets in the report:\n%s", out.String())
		}
	})

	t.Run("scale", func(t *testing.T) {
		rs, err := scale(ctx, e, []int{2}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		printScale(&out, rs)
		t.Log("\n" + out.String())
		if r := rs[0]; r.Programs != 2 || r.One.N != 1 || r.All.N != 2 || r.ExitCode != 0 {
			t.Errorf("want 1 single and 2 simultaneous handovers and exit 0, have %+v", r)
		}
	})

	t.Run("longlived", func(t *testing.T) {
		r, err := longlived(ctx, e, longlivedOptions{WS: 3, SSE: 3, Handovers: 2, Rate: 100, Pause: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		printLonglived(&out, r)
		t.Log("\n" + out.String())
		for _, s := range []streamResult{r.WS, r.SSE} {
			if s.Clients != 3 || s.Goodbyes < 6 || s.Abnormal != 0 || s.Missed != 0 || s.Events == 0 || s.Reconnect.N != 6 {
				t.Errorf("want 3 clients with 6 goodbyes and reconnections, events, none abnormal or missed, have %+v", s)
			}
		}
		if r.Handovers != 2 || r.OldLifetime.N != 2 || r.Failed != 0 || r.LostWrites != 0 || r.Acked == 0 {
			t.Errorf("want 2 handovers, no failed request and no lost write of some acknowledged, have %+v", r)
		}
	})

	// The idle pools, short: baton only, reached directly, then through
	// nginx (skipped with a message where nginx is not installed).
	for _, front := range []string{"clients", "nginx"} {
		t.Run("idle-"+front, func(t *testing.T) {
			if front == "nginx" {
				if _, err := findNginx(); err != nil {
					if os.Getenv("BATON_REQUIRE_NGINX") != "" {
						t.Fatalf("BATON_REQUIRE_NGINX is set: %v", err)
					}
					t.Skipf("the idle pools through nginx need nginx: %v", err)
				}
			}
			rs, err := idle(ctx, e, idleOptions{Clients: 8, Handovers: 2, MaxPause: 200 * time.Millisecond, Interval: 100 * time.Millisecond,
				Fronts: []string{front}, Kinds: []string{"baton"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			printIdle(&out, rs)
			t.Log("\n" + out.String())
			if len(rs) != 1 {
				t.Fatalf("want 1 scenario, have %d", len(rs))
			}
			r := rs[0]
			if r.Handovers != 2 || r.OK == 0 || r.LostWrites != 0 || r.OldLifetime.N != 2 {
				t.Errorf("%s: want 2 handovers, answers and no lost write, have %+v", r.Scenario, r)
			}
			// The targets: nothing fails (no 502 through nginx), and the
			// clients' idle connections move: no reconnect.
			if r.Failed != 0 || (front == "clients" && r.Dials != 0) {
				t.Errorf("%s: want 0 failed and 0 reconnects, have %d failed (%v), %d reconnects", r.Scenario, r.Failed, r.FailedByKind, r.Dials)
			}
		})
	}

	// A bad deploy, short: with a bake, a version that answers 500s and
	// one that crashes after READY are reverted to the old generation,
	// still serving; without a bake and naively, the monitor reverts
	// the 500s with a cold start.
	t.Run("baddeploy", func(t *testing.T) {
		opt := badOptions{Clients: 4, PerConnection: 5, Interval: 200 * time.Millisecond, BakeFor: 30 * time.Second,
			Before: 500 * time.Millisecond, After: 500 * time.Millisecond,
			Kinds: []badKind{{Name: "5xx", Fault: "errors=10%"}, {Name: "crash", Fault: "crash=1s"}}, Systems: []string{"bake"}}
		rs, err := badDeploy(ctx, e, opt, nil)
		if err != nil {
			t.Fatal(err)
		}
		opt.Kinds, opt.Systems = opt.Kinds[:1], []string{"nobake", "naive"}
		more, err := badDeploy(ctx, e, opt, nil)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, more...)
		var out strings.Builder
		printBadDeploy(&out, rs)
		t.Log("\n" + out.String())
		if len(rs) != 4 {
			t.Fatalf("want 4 scenarios, have %d", len(rs))
		}
		for _, r := range rs {
			name := r.Kind + " " + r.System
			if !r.Reverted || r.Acked == 0 || r.LostWrites != 0 || r.ServingPID == 0 {
				t.Errorf("%s: want a revert, some acknowledged, 0 lost writes and one pid serving, have %+v", name, r)
			}
			if r.Kind == "5xx" && (r.Answered5xx == 0 || !strings.Contains(r.Reason, "5xx on")) {
				t.Errorf("%s: want 500s answered and a verdict on them, have %d, %q", name, r.Answered5xx, r.Reason)
			}
			if r.System != "bake" {
				if !r.ColdStart || r.ServingPID == r.OldPID {
					t.Errorf("%s: want the revert to start a new process, have pid %d serving, %d before", name, r.ServingPID, r.OldPID)
				}
				continue
			}
			// With a bake: the old pid serves, nothing refused, and only
			// the crash fails requests: those it had in flight.
			if r.ColdStart || r.ServingPID != r.OldPID || r.Refused != 0 {
				t.Errorf("%s: want the old pid %d serving and 0 refused, have pid %d and %d refused", name, r.OldPID, r.ServingPID, r.Refused)
			}
			if r.Kind == "crash" && (!strings.Contains(r.Reason, "exited during the bake") || r.Failed > int64(opt.Clients)) {
				t.Errorf("%s: want a verdict on the exit and at most one request cut per client, have %q and %d failed (%v)", name, r.Reason, r.Failed, r.FailedByKind)
			}
			if r.Kind == "5xx" && r.Failed != 0 {
				t.Errorf("%s: want no failure but the 500s, have %d (%v)", name, r.Failed, r.FailedByKind)
			}
		}
	})

	t.Run("soak", func(t *testing.T) {
		r, err := soak(ctx, e, 3, 2)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		printSoak(&out, r)
		t.Log("\n" + out.String())
		if r.Handovers != 3 || len(r.Samples) != 2 || r.LostWrites != 0 || r.Acked == 0 {
			t.Errorf("want 3 handovers, 2 samples and 0 lost writes of some acknowledged, have %+v", r)
		}
	})
}

// peerBinsOrSkip builds the peers' apps. It skips when their modules
// cannot be had: the first build fetches tableflip and overseer through
// the module proxy.
func peerBinsOrSkip(ctx context.Context, t *testing.T, e *env) *peerBins {
	t.Helper()
	dl := exec.CommandContext(ctx, "go", "mod", "download")
	dl.Dir = filepath.Join(e.root, "bench", "peers")
	if out, err := dl.CombinedOutput(); err != nil {
		t.Skipf("the peers' modules cannot be downloaded (is the module proxy out of reach?): %v\n%s", err, out)
	}
	bins, err := buildPeers(ctx, e, false)
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

// leftovers lists the processes running one of the peers' binaries, and
// the test's children left unreaped.
func leftovers(t *testing.T, bins *peerBins) []string {
	t.Helper()
	all, err := procfs.All()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, st := range all {
		if st.Exited() {
			if st.PPID == os.Getpid() {
				out = append(out, fmt.Sprintf("%d unreaped", st.PID))
			}
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.PID))
		if err != nil {
			continue
		}
		for _, b := range []string{bins.plain, bins.tableflip, bins.drain, bins.overseer, bins.baton} {
			if strings.TrimSuffix(exe, " (deleted)") == b {
				out = append(out, fmt.Sprintf("%d %s", st.PID, filepath.Base(b)))
			}
		}
	}
	return out
}

// The versions the harness reports are the ones the nested modules pin.
func TestPeerVersions(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"peers/go.mod", "github.com/cloudflare/tableflip " + tableflipVersion},
		{"peers/go.mod", "github.com/jpillora/overseer " + overseerVersion},
		{"peers/air/go.mod", "github.com/air-verse/air " + airVersion},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: want %q", tc.file, tc.want)
		}
	}
}

func TestEdit(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "main.go")
	src := "package main\n\nconst edit = \"0\" // rewritten\n\nfunc main() {}\n"
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := edit(f, "x-1"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	lines := strings.Split(string(b), "\n")
	if len(lines) != len(strings.Split(src, "\n")) || !strings.HasPrefix(lines[2], `const edit = "x-1"`) {
		t.Errorf("want one line changed, have:\n%s", b)
	}
	os.WriteFile(f, []byte("package main\n"), 0o644)
	if err := edit(f, "x-2"); err == nil {
		t.Error("want an error for a file without the line")
	}
}

func TestCLI_usage(t *testing.T) {
	for _, args := range [][]string{
		{"-soak", "500"},
		{"-duration", "10ms"},
		{"-programs", "1,x", "-scale"},
		{"-scenarios", "fast"},
		{"-c", "0"},
		{"-slice", "-1s"},
		{"-runs", "0"},
		{"-journal", "-scale"},
		{"-longlived", "-ws", "0", "-sse", "0"},
		{"-longlived", "-rate", "0"},
		{"-peers", "-devloop"},
		{"-peers", "-scale"},
		{"-peers", "-scenarios", "naive"},
		{"-peers", "-scenarios", "go-build"},
		{"-devloop", "-scenarios", "tableflip"},
		{"-devloop", "-dev-build", "go build ."},
		{"-idle", "-pool", "0"},
		{"-idle", "-maxpause", "-1s"},
		{"-baddeploy", "-perconn", "0"},
		{"-baddeploy", "-interval", "1h"},
		{"-baddeploy", "-kinds", "flaky"},
		{"-baddeploy", "-scenarios", "baton"},
		{"-baddeploy", "-idle"},
	} {
		var stderr strings.Builder
		if code := cli(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("%q: want exit 2, have %d", args, code)
		}
		if !strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("%q: want a message, have %q", args, stderr.String())
		}
	}
}

func TestSoakFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want soakFlag
	}{{"true", 1000}, {"false", 0}, {"42", 42}} {
		var f soakFlag
		if err := f.Set(tc.in); err != nil || f != tc.want {
			t.Errorf("Set(%q): want %d, have %d (%v)", tc.in, tc.want, f, err)
		}
	}
	var f soakFlag
	if err := f.Set("0"); err == nil {
		t.Error("Set(0): want an error")
	}
}

func TestHandoversIn(t *testing.T) {
	for _, tc := range []struct {
		n, total int
		want     string
	}{
		{10, 5, "0101010101"},
		{1, 5, "5"},
		{4, 2, "0101"},
		{3, 6, "222"},
		{5, 0, "00000"},
	} {
		var have strings.Builder
		for i := 0; i < tc.n; i++ {
			have.WriteString(strconv.Itoa(handoversIn(i, tc.n, tc.total)))
		}
		if have.String() != tc.want {
			t.Errorf("%d handovers in %d turns: want %s, have %s", tc.total, tc.n, tc.want, have.String())
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if have := percentile(ds, tc.p); have != tc.want {
			t.Errorf("p%v: want %v, have %v", tc.p, tc.want, have)
		}
	}
	if have := percentile(nil, 99); have != 0 {
		t.Errorf("empty: want 0, have %v", have)
	}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(line)
	}
	return len(p), nil
}

// TestWaitServed_earliestAnswer: of the new process's answers, the one it
// gave first is the result, even when a later one was received sooner;
// the probes run side by side; a failed probe opens a refused window.
func TestWaitServed_earliestAnswer(t *testing.T) {
	var (
		mu       sync.Mutex
		n        int
		arrived  = make(chan struct{}) // the new process's first probe came
		received = make(chan struct{}) // the harness has its later answer
		once     sync.Once
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		switch i {
		case 1: // the old process
			fmt.Fprint(w, `{"pid":1}`)
		case 2: // nobody answers
			panic(http.ErrAbortHandler)
		case 3:
			// The new process's first answer, given at 100, reaches the
			// harness only after a later one, given at 200.
			close(arrived)
			select {
			case <-received:
			case <-time.After(30 * time.Second): // bounds a failure only
				t.Error("no probe ran beside the one held")
			}
			fmt.Fprint(w, `{"pid":2,"at":100}`)
		default:
			<-arrived
			fmt.Fprint(w, `{"pid":2,"at":200}`)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	s, err := waitServed(context.Background(), addr, time.Minute, time.Millisecond, func(a pidAnswer) bool {
		if a.At == 200 {
			once.Do(func() { close(received) })
		}
		return a.PID == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.answer.PID != 2 || s.answer.At != 100 {
		t.Errorf("want the answer given first (at 100), have %+v", s.answer)
	}
	if s.failed != 1 || s.refused <= 0 {
		t.Errorf("want the failed probe counted, and its window, have %d failed, %v", s.failed, s.refused)
	}
}
