package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/baton-run/baton/internal/harness"
	"github.com/baton-run/baton/internal/loadgen"
)

// options are the settings of a run.
type options struct {
	Duration  time.Duration // of each scenario's measured load
	Handovers int           // per scenario (naive and baton)
	Clients   int           // keep-alive clients
	Get       bool          // also run the GET-only variants
	Only      []string      // run only these scenarios (their direct too)
	Runs      int           // times each scenario runs; the figures pool them
	Slice     time.Duration // the load's turn on each target (0: each scenario in one piece)
	Journal   bool          // instead: the example with its journal against without
}

// scenario is one way of running the example under load.
type scenario struct {
	name string
	kind string // "direct", "naive", "baton", or "journal" (direct, against an unjournaled direct)
	get  bool
	env  []string // the example's, added
}

// scenarios lists the comparison in its order: direct first in each
// method, since the others are measured against it. They run the example
// without its journal (noJournal): what they measure is the handover;
// -journal measures what the journal costs.
func scenarios(get bool) []scenario {
	off := []string{noJournal}
	out := []scenario{{name: "direct", kind: "direct", env: off}, {name: "naive", kind: "naive", env: off}, {name: "baton", kind: "baton", env: off}}
	if get {
		out = append(out, scenario{name: "direct-get", kind: "direct", get: true, env: off}, scenario{name: "naive-get", kind: "naive", get: true, env: off},
			scenario{name: "baton-get", kind: "baton", get: true, env: off})
	}
	return out
}

// noJournal turns the example's journal off.
const noJournal = "ORDERS_JOURNAL=off"

// journalScenarios compare the example's POST with its journal (the
// default: each 202 waits for a group-committed fdatasync) against the
// same without one, both run directly, side by side.
func journalScenarios() []scenario {
	return []scenario{
		{name: "unjournaled", kind: "direct", env: []string{noJournal}},
		{name: "journaled", kind: "journal", env: []string{"ORDERS_JOURNAL="}}, // beside the database
	}
}

// The GET-only variant reads /orders/count, a handler that queries SQLite.
// Not /healthz: it answers 503 while its process drains, by design, so that
// load balancers stop sending there.
const getPath = "/orders/count"

// durStats summarises durations, in milliseconds.
type durStats struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// scenarioResult is the outcome of one scenario: a JSON object of -json.
type scenarioResult struct {
	Scenario  string  `json:"scenario"`
	Request   string  `json:"request"` // "POST /orders" or "GET /orders/count"
	Clients   int     `json:"clients"`
	Runs      int     `json:"runs"`
	DurationS float64 `json:"duration_s"` // of the measured load, every run
	Handovers int     `json:"handovers"`  // completed: restarts (naive), handovers (baton)

	Requests     int64            `json:"requests"` // every attempt, failed ones included
	OK           int64            `json:"ok"`       // 2xx responses
	Failed       int64            `json:"failed"`
	FailedByKind map[string]int64 `json:"failed_by_kind"` // connect, read_eof, status_503, …
	Acked        int              `json:"acked"`          // 202s, warm-up included (POST)
	LostWrites   int              `json:"lost_writes"`    // acked ids missing from SQLite

	RPS   float64 `json:"rps"` // 2xx responses per second
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	P99In float64 `json:"p99_window_ms"` // requests started inside a handover window
	MaxIn float64 `json:"max_window_ms"`
	// P99Out is the steady state of the same scenario: requests started
	// outside the windows.
	P99Out float64 `json:"p99_steady_ms"`
	// Requests and failures that started inside the handover windows.
	WindowRequests int64 `json:"window_requests"`
	WindowFailed   int64 `json:"window_failed"`

	// Against direct with the same request: throughput, overall p99, and
	// the p99 inside the handover windows against direct's overall p99.
	RPSRatio       float64 `json:"rps_ratio"`
	P99Ratio       float64 `json:"p99_ratio"`
	P99WindowRatio float64 `json:"p99_window_ratio"`
	// CostPerHandover is the throughput lost against direct, per
	// handover, in milliseconds of direct's throughput: what a handover
	// costs whatever their rate. At one handover every T seconds the
	// throughput ratio is about 1 - cost/T.
	CostPerHandover float64 `json:"cost_per_handover_ms"`

	// From the trigger until the new process serves (naive: answers
	// /healthz; baton: the reload request returned, the new generation
	// having sent READY=1), and until the handover is over (the old
	// process exited and the new one serves).
	TriggerToServing durStats `json:"trigger_to_serving_ms"`
	Window           durStats `json:"window_ms"`
	ReadyIn          durStats `json:"ready_in_ms,omitzero"` // baton's own figure
	OldExitCodes     []int    `json:"old_exit_codes"`       // of the replaced processes
	ExitCode         int      `json:"exit_code"`            // of the final graceful stop

	Baton *usage `json:"baton,omitempty"`
	// AppCPU is the example's CPU time per successful request, in
	// microseconds, when it ran without restarts (direct, journaled).
	AppCPU  float64 `json:"app_cpu_us_per_request,omitempty"`
	LoadAvg string  `json:"loadavg"` // at the end of the scenario
	// OthersCPU is the share of the CPUs that processes other than the
	// harness's used during the load: above a few percent, the figures
	// are those of a busy machine.
	OthersCPU float64  `json:"others_cpu_percent"`
	Machine   *machine `json:"machine,omitempty"`
}

// compare runs the scenarios, opt.Runs times over, and passes each result
// to emit as soon as its last run is done. The scenarios of one request
// run side by side: their targets start together and the load visits each
// in turn, opt.Slice at a time, so that a slow spell of the machine (a
// virtual machine's neighbours are invisible from inside) touches them all
// alike.
func compare(ctx context.Context, e *env, opt options, emit func(*scenarioResult)) ([]*scenarioResult, error) {
	var groups [][]scenario
	if opt.Journal {
		groups = append(groups, journalScenarios())
	}
	for _, get := range []bool{false, true} {
		if opt.Journal || get && !opt.Get {
			continue
		}
		var g []scenario
		for _, sc := range scenarios(true) {
			if sc.get == get && (len(opt.Only) == 0 || contains(opt.Only, sc.name) || sc.kind == "direct") {
				g = append(g, sc)
			}
		}
		groups = append(groups, g)
	}
	runs := map[string][]*targetRun{}
	var out []*scenarioResult
	for i := 1; i <= max(1, opt.Runs); i++ {
		for _, g := range groups {
			if opt.Runs > 1 {
				e.logf("run %d of %d", i, opt.Runs)
			}
			trs, err := runGroup(ctx, e, g, opt, i)
			if err != nil {
				return out, err
			}
			for j, sc := range g {
				runs[sc.name] = append(runs[sc.name], trs[j])
			}
			if i < opt.Runs {
				continue
			}
			var direct *scenarioResult
			for _, sc := range g {
				r := summarize(sc, opt, runs[sc.name])
				if sc.kind == "direct" {
					direct = r
				}
				if direct != nil {
					r.RPSRatio = ratio(r.RPS, direct.RPS)
					r.P99Ratio = ratio(r.P99, direct.P99)
					r.P99WindowRatio = ratio(r.P99In, direct.P99)
					if r.Handovers > 0 && direct.RPS > 0 {
						lost := (direct.RPS - r.RPS) * r.DurationS // requests
						r.CostPerHandover = round(lost/direct.RPS/float64(r.Handovers)*1000, 0)
					}
				}
				out = append(out, r)
				if emit != nil {
					emit(r)
				}
			}
		}
	}
	return out, nil
}

// targetRun is what one run of a scenario recorded.
type targetRun struct {
	slices   []slice
	acked    int
	lost     int
	exitCode int
	baton    *usage
	appCPU   float64 // the example's CPU seconds in turns without restarts
	loadAvg  string
	// The CPU time others used during the load, and all there was.
	othersTicks, totalTicks int64
}

// slice is one turn of the load on a target.
type slice struct {
	res   *loadgen.Result
	start time.Time // of the load: the samples' origin
	hs    []handover
}

// liveTarget is a scenario's target while its group runs.
type liveTarget struct {
	sc      scenario
	t       target
	db      string
	cfg     loadgen.Config
	acked   []string
	run     *targetRun
	bt      *batonTarget
	sampler *usageSampler
	loaded  time.Duration // the time the load spent on it
}

// runGroup runs scenarios side by side: it starts their targets, warms
// them up, gives each the load in turn, slice after slice, with the
// handovers spread evenly over the slices, then stops them gracefully and
// checks every acknowledged write against each one's database.
func runGroup(ctx context.Context, e *env, scs []scenario, opt options, n int) ([]*targetRun, error) {
	var ls []*liveTarget
	defer func() {
		for _, l := range ls {
			l.t.kill()
		}
	}()
	for _, sc := range scs {
		l, err := startTarget(ctx, e, sc, opt, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		if err := l.warmUp(ctx, opt); err != nil {
			return nil, fmt.Errorf("%s: %w", l.sc.name, err)
		}
	}
	slices, d := plan(opt)
	var names []string
	for _, l := range ls {
		names = append(names, l.sc.name)
		if l.bt != nil {
			l.sampler = sampleUsage(l.bt.p.pid)
		}
	}
	e.logf("%s: %v each of %s from %d clients, %s, in %s of %v",
		strings.Join(names, ", "), opt.Duration, scs[0].request(), opt.Clients, plural(opt.Handovers, "handover"), plural(slices, "turn"), d)
	for i := 0; i < slices; i++ {
		for _, l := range ls {
			h := 0
			if l.sc.kind == "naive" || l.sc.kind == "baton" {
				h = handoversIn(i, slices, opt.Handovers)
			}
			if err := l.runSlice(ctx, i, d, h); err != nil {
				return nil, fmt.Errorf("%s: %w", l.sc.name, err)
			}
		}
	}
	var out []*targetRun
	for _, l := range ls {
		if err := l.finish(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", l.sc.name, err)
		}
		r := l.run
		loaded := time.Duration(0)
		var ok int64
		var failed int64
		for _, s := range r.slices {
			loaded += s.res.Elapsed
			ok += s.res.OK
			failed += s.res.FailedTotal()
		}
		e.logf("%s: %.0f req/s, %d failed, %d lost writes; others used %.1f%% of the CPUs",
			l.sc.name, float64(ok)/loaded.Seconds(), failed, r.lost, r.othersPercent())
		out = append(out, r)
	}
	return out, nil
}

// plan cuts each scenario's load into turns of about opt.Slice.
func plan(opt options) (int, time.Duration) {
	if opt.Slice <= 0 || opt.Slice >= opt.Duration {
		return 1, opt.Duration
	}
	n := int(math.Round(float64(opt.Duration) / float64(opt.Slice)))
	return n, opt.Duration / time.Duration(n)
}

// handoversIn returns how many of total handovers fall in turn i of n:
// handover k goes to the turn that holds the point (k+½)/total of the
// load, so that they are evenly spread.
func handoversIn(i, n, total int) int {
	c := 0
	for k := 0; k < total; k++ {
		if int((float64(k)+0.5)*float64(n)/float64(total)) == i {
			c++
		}
	}
	return c
}

func startTarget(ctx context.Context, e *env, sc scenario, opt options, n int) (*liveTarget, error) {
	name := sc.name
	if opt.Runs > 1 {
		name = fmt.Sprintf("%s.%d", sc.name, n)
	}
	dir, err := e.dir(name)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	l := &liveTarget{sc: sc, db: filepath.Join(dir, "orders.db"), run: &targetRun{}}
	switch sc.kind {
	case "direct", "naive", "journal":
		l.t, err = startOrders(ctx, e, dir, l.db, addr, sc.env...)
	case "baton":
		l.bt, err = startBaton(ctx, e, dir, []batonProgram{{name: "orders", db: l.db, addr: addr}})
		l.t = l.bt
	}
	if err != nil {
		return nil, err
	}
	l.cfg = loadgen.Config{Addr: l.t.addr(), Clients: opt.Clients, Get: sc.get,
		IDPrefix: fmt.Sprintf("%s-%d", name, time.Now().UnixNano())}
	if sc.get {
		l.cfg.Path = getPath
	}
	return l, nil
}

// warmUp sends a few requests first: the first requests of a fresh process
// (page faults, SQLite's cache, connection setup) belong to no scenario.
func (l *liveTarget) warmUp(ctx context.Context, opt options) error {
	warm := l.cfg
	warm.MaxRequests, warm.IDPrefix = int64(50*opt.Clients), l.cfg.IDPrefix+"-warm"
	wl := loadgen.Start(ctx, warm)
	select {
	case <-wl.Done():
	case <-time.After(startTimeout):
	}
	res := wl.Stop()
	if n := res.FailedTotal(); n > 0 {
		return fmt.Errorf("warm-up: %d of %d requests failed: %v", n, res.Requests, res.Examples)
	}
	l.acked = append(l.acked, res.Acked...)
	return nil
}

// runSlice loads the target for d, with handovers evenly spaced in it.
func (l *liveTarget) runSlice(ctx context.Context, i int, d time.Duration, handovers int) error {
	cfg := l.cfg
	cfg.IDPrefix = fmt.Sprintf("%s-%d", l.cfg.IDPrefix, i) // ids restart with each load
	cfg.Samples = true
	// A bound on the count as well as the time, far above what the
	// machine can do, so that the load is bounded whatever happens.
	cfg.MaxRequests = int64(math.Ceil(d.Seconds())+5) * 1_000_000
	var cpu0, app0 float64
	if l.bt != nil {
		cpu0, _ = cpuSeconds(l.bt.p.pid)
	}
	// The example's own CPU, when one process serves the whole turn.
	app, _ := l.t.(*ordersTarget)
	if app != nil && handovers == 0 {
		app0, _ = cpuSeconds(app.cur.pid)
	}
	share := startCPUShare()
	s := slice{start: time.Now()}
	load := loadgen.Start(ctx, cfg)
	for j := 1; j <= handovers; j++ {
		if err := sleepUntil(ctx, s.start.Add(time.Duration(j)*d/time.Duration(handovers+1))); err != nil {
			load.Stop()
			return err
		}
		h, err := l.t.handover(ctx)
		if err != nil {
			load.Stop()
			return fmt.Errorf("handover: %w", err)
		}
		s.hs = append(s.hs, h)
	}
	if err := sleepUntil(ctx, s.start.Add(d)); err != nil {
		load.Stop()
		return err
	}
	s.res = load.Stop()
	others, total := share.delta()
	l.run.othersTicks += others
	l.run.totalTicks += total
	if l.bt != nil {
		cpu1, _ := cpuSeconds(l.bt.p.pid)
		if l.run.baton == nil {
			l.run.baton = &usage{}
		}
		l.run.baton.CPUSeconds += cpu1 - cpu0
	}
	if app != nil && handovers == 0 {
		app1, _ := cpuSeconds(app.cur.pid)
		l.run.appCPU += app1 - app0
	}
	l.loaded += s.res.Elapsed
	l.acked = append(l.acked, s.res.Acked...)
	l.run.slices = append(l.run.slices, s)
	return nil
}

// finish stops the target gracefully and counts the acknowledged writes
// its database lacks.
func (l *liveTarget) finish(ctx context.Context) error {
	if l.bt != nil {
		u := l.sampler.finish()
		if l.run.baton == nil {
			l.run.baton = &usage{}
		}
		b := l.run.baton
		b.RSSMiB, b.CPUSeconds = u.RSSMiB, round(b.CPUSeconds, 2)
		if l.loaded > 0 {
			b.CPUPercent = round(b.CPUSeconds/l.loaded.Seconds()*100, 2)
		}
		b.FDs, _ = openFDs(l.bt.p.pid)
		b.Goroutines, _ = l.bt.goroutines(ctx)
	}
	var err error
	if l.run.exitCode, err = l.t.stop(); err != nil {
		return err
	}
	if !l.sc.get {
		missing, err := loadgen.MissingOrders(l.db, l.acked)
		if err != nil {
			return fmt.Errorf("lost writes: %w", err)
		}
		l.run.acked, l.run.lost = len(l.acked), len(missing)
	}
	l.run.loadAvg = harness.LoadAvg()
	return nil
}

func (r *targetRun) othersPercent() float64 {
	if r.totalTicks == 0 {
		return 0
	}
	return round(float64(r.othersTicks)/float64(r.totalTicks)*100, 1)
}

func (sc scenario) request() string {
	if sc.get {
		return "GET " + getPath
	}
	return "POST /orders"
}

// summarize pools the runs of a scenario and their slices: counts add up,
// percentiles are over every sample. Latency percentiles are over
// successful requests: a refused connection fails in microseconds and
// would make a restart look fast.
func summarize(sc scenario, opt options, runs []*targetRun) *scenarioResult {
	r := &scenarioResult{Scenario: sc.name, Request: sc.request(), Clients: opt.Clients, Runs: len(runs),
		FailedByKind: map[string]int64{}, OldExitCodes: []int{}}
	var elapsed time.Duration
	var others, total int64
	var appCPU float64
	var all, in, out, serving, window, ready []time.Duration
	for _, run := range runs {
		r.Acked += run.acked
		r.LostWrites += run.lost
		r.ExitCode = max(r.ExitCode, run.exitCode)
		appCPU += run.appCPU
		r.LoadAvg = run.loadAvg
		others += run.othersTicks
		total += run.totalTicks
		if u := run.baton; u != nil {
			if r.Baton == nil {
				r.Baton = &usage{}
			}
			r.Baton.RSSMiB = max(r.Baton.RSSMiB, u.RSSMiB)
			r.Baton.CPUSeconds = round(r.Baton.CPUSeconds+u.CPUSeconds, 2)
			r.Baton.FDs, r.Baton.Goroutines = u.FDs, u.Goroutines
		}
		for _, sl := range run.slices {
			res := sl.res
			elapsed += res.Elapsed
			r.Requests += res.Requests
			r.OK += res.OK
			r.Failed += res.FailedTotal()
			for k, v := range res.Failed {
				r.FailedByKind[k] += v
			}
			r.Handovers += len(sl.hs)
			for _, s := range res.Samples {
				inside := false
				for _, h := range sl.hs {
					if s.At >= h.trigger.Sub(sl.start) && s.At <= h.end.Sub(sl.start) {
						inside = true
						break
					}
				}
				if inside {
					r.WindowRequests++
					if !s.OK {
						r.WindowFailed++
					}
				}
				if !s.OK {
					continue
				}
				all = append(all, s.Latency)
				if inside {
					in = append(in, s.Latency)
				} else {
					out = append(out, s.Latency)
				}
			}
			for _, h := range sl.hs {
				serving = append(serving, h.serving.Sub(h.trigger))
				window = append(window, h.end.Sub(h.trigger))
				if h.readyIn > 0 {
					ready = append(ready, h.readyIn)
				}
				r.OldExitCodes = append(r.OldExitCodes, h.oldCode)
			}
		}
	}
	r.DurationS = round(elapsed.Seconds(), 2)
	if elapsed > 0 {
		r.RPS = round(float64(r.OK)/elapsed.Seconds(), 0)
		if r.Baton != nil {
			r.Baton.CPUPercent = round(r.Baton.CPUSeconds/elapsed.Seconds()*100, 2)
		}
	}
	if total > 0 {
		r.OthersCPU = round(float64(others)/float64(total)*100, 1)
	}
	if appCPU > 0 && r.OK > 0 {
		r.AppCPU = round(appCPU/float64(r.OK)*1e6, 1)
	}
	sortDurations(all)
	sortDurations(in)
	sortDurations(out)
	r.P50, r.P99, r.Max = ms(percentile(all, 50)), ms(percentile(all, 99)), ms(percentile(all, 100))
	r.P99In, r.MaxIn, r.P99Out = ms(percentile(in, 99)), ms(percentile(in, 100)), ms(percentile(out, 99))
	r.TriggerToServing, r.Window, r.ReadyIn = summary(serving), summary(window), summary(ready)
	return r
}

func summary(ds []time.Duration) durStats {
	sortDurations(ds)
	return durStats{N: len(ds), Median: ms(percentile(ds, 50)), Max: ms(percentile(ds, 100))}
}

func sortDurations(ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
}

// percentile returns the nearest-rank p-th percentile of sorted, 0 when it
// is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a/b, 3)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// sleepUntil paces the scenario: it waits for t or the end of ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
