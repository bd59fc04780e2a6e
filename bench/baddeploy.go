package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
)

// badKind is one way a deploy goes bad after READY, as examples/orders
// plays it with ORDERS_FAULT.
type badKind struct {
	Name  string // 5xx, crash, slow
	Fault string // the value of ORDERS_FAULT
	// Latency is what the slow fault adds: its first answers, and the
	// failure's first sign, come that long after it began serving.
	Latency time.Duration
}

// defaultBadKinds are the bad versions of -baddeploy.
func defaultBadKinds() []badKind {
	return []badKind{
		{Name: "5xx", Fault: "errors=10%"},
		{Name: "crash", Fault: "crash=2s"},
		{Name: "slow", Fault: "latency=100ms", Latency: 100 * time.Millisecond},
	}
}

// The timeline of -baddeploy: the load runs badBefore before the deploy
// (the monitor's baseline) and badAfter after the recovery; the bake
// lasts badBakeFor, longer than any bad version needs to show.
const (
	badBefore  = 2 * time.Second
	badAfter   = 2 * time.Second
	badBakeFor = 30 * time.Second
)

// findBadKind returns the bad version of that name.
func findBadKind(name string) (badKind, bool) {
	for _, k := range defaultBadKinds() {
		if k.Name == name {
			return k, true
		}
	}
	return badKind{}, false
}

// badSystems are the ways -baddeploy deploys: baton with a bake, baton
// without one, and a naive stop-then-start.
var badSystems = []string{"bake", "nobake", "naive"}

// badOptions are the flags of -baddeploy.
type badOptions struct {
	Clients       int
	PerConnection int           // requests per connection before a client reconnects
	Interval      time.Duration // the bake's evaluation interval, and the monitor's
	BakeFor       time.Duration // the bake's duration; the monitor gives up after as long
	Before        time.Duration // the load before the deploy: the baseline
	After         time.Duration // the load after the recovery
	Kinds         []badKind
	Systems       []string
}

// The rule a bake applies with the bench's bake block, which the monitor
// of the systems without a bake applies too, to what the clients see.
const (
	badMaxErrors      = 0.01                  // max_errors = "1%"
	badMaxP99         = 2.0                   // max_p99 = "2x"
	badMinRequests    = 20                    // answers before a share of 5xx is judged
	badMinP99Requests = 100                   // answers before a p99 is judged
	badP99Floor       = 10 * time.Millisecond // a p99 below this is never slow
)

// badResult is one bad deploy: one kind of bad version, one system.
type badResult struct {
	Mode          string  `json:"mode"`   // "baddeploy"
	System        string  `json:"system"` // bake, nobake, naive
	Kind          string  `json:"kind"`   // 5xx, crash, slow
	Fault         string  `json:"fault"`  // ORDERS_FAULT of the bad version
	Clients       int     `json:"clients"`
	PerConnection int     `json:"per_connection"`
	IntervalMS    float64 `json:"interval_ms"`
	DurationS     float64 `json:"duration_s"`

	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// Answered5xx are the bad version's own 500s; Failed every other
	// failure (socket errors, timeouts), Refused those of them that
	// found nobody listening.
	Answered5xx  int64             `json:"answered_5xx"`
	Failed       int64             `json:"failed"`
	Refused      int64             `json:"refused"`
	FailedByKind map[string]int64  `json:"failed_by_kind"`
	Examples     map[string]string `json:"failure_examples,omitempty"`
	Acked        int               `json:"acked"`
	LostWrites   int               `json:"lost_writes"`

	// Reverted: the bad version was noticed and the good one serves
	// alone again. Reason is the bake's verdict, or the monitor's.
	Reverted bool   `json:"reverted"`
	Reason   string `json:"reason"`
	// The times, in ms: from the deploy's trigger to the first sign of
	// the failure (a client's first 500, its first answer as slow as
	// the fault, the bad process's exit), from that sign to the revert
	// (the bake's verdict, the monitor's decision), and to the recovery
	// (the good version serving alone again: see BENCH.md).
	SignAfterMS   float64 `json:"sign_after_trigger_ms"`
	SignToRevert  float64 `json:"sign_to_revert_ms"`
	SignToRecover float64 `json:"sign_to_recovery_ms"`

	// OldPID served before the deploy; ServingPID serves at the end
	// (0 when the probes disagreed). ColdStart: they differ.
	OldPID     int  `json:"old_pid"`
	ServingPID int  `json:"serving_pid"`
	ColdStart  bool `json:"cold_start"`

	// With a bake: the requests the new generation had answered by the
	// last report of its counters baton showed before the verdict
	// (BakeSeenMS into the bake), and their share of the requests the
	// clients had answered since the bake began.
	BakeRequests uint64  `json:"bake_requests,omitempty"`
	BakeSeenMS   float64 `json:"bake_seen_ms,omitempty"`
	NewShare     float64 `json:"new_share,omitempty"`

	OthersCPU float64  `json:"others_cpu_percent"`
	Machine   *machine `json:"machine,omitempty"`
}

// badDeploy runs every kind of bad version against every system, one
// after another, and calls emit with each result.
func badDeploy(ctx context.Context, e *env, opt badOptions, emit func(*badResult)) ([]*badResult, error) {
	if len(opt.Kinds) == 0 {
		opt.Kinds = defaultBadKinds()
	}
	if len(opt.Systems) == 0 {
		opt.Systems = badSystems
	}
	var out []*badResult
	for _, k := range opt.Kinds {
		for _, sys := range opt.Systems {
			r, err := badDeployRun(ctx, e, opt, sys, k)
			if err != nil {
				return out, fmt.Errorf("baddeploy %s %s: %w", k.Name, sys, err)
			}
			if emit != nil {
				emit(r)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// badRun is one bad deploy under way.
type badRun struct {
	e    *env
	opt  badOptions
	kind badKind
	r    *badResult
	mon  *badMonitor
	dir  string
	db   string
}

// badConfig is baton's config for -baddeploy: the example with its
// journal (a crash must not lose what it acknowledged), fault the
// value of ORDERS_FAULT ("" for the good version), and a bake block
// for the system "bake".
func badConfig(orders, db, metricsAddr string, bake bool, opt badOptions, fault string) string {
	env := fmt.Sprintf("ORDERS_DB = %q", db)
	if fault != "" {
		env += fmt.Sprintf(", ORDERS_FAULT = %q", fault)
	}
	block := ""
	if bake {
		block = fmt.Sprintf(`
  bake {
    duration   = %q
    interval   = %q
    http       = "/healthz"
    max_errors = "1%%"
    max_p99    = "2x"
  }`, opt.BakeFor.String(), opt.Interval.String())
	}
	return fmt.Sprintf(`log {
  level  = "info"
  format = "text"
}
watch { enabled = false }
metrics { address = %q }

program "orders" {
  command  = [%q]
  env      = { %s }
  listener "http" { address = "127.0.0.1:0" }
  ready { timeout = "60s" }
  stop  { timeout = "60s" }%s
}
`, metricsAddr, orders, env, block)
}

func badDeployRun(ctx context.Context, e *env, opt badOptions, system string, kind badKind) (*badResult, error) {
	name := kind.Name + "-" + system
	dir, err := e.dir("baddeploy-" + name)
	if err != nil {
		return nil, err
	}
	b := &badRun{e: e, opt: opt, kind: kind, dir: dir, db: filepath.Join(dir, "orders.db"), mon: &badMonitor{},
		r: &badResult{Mode: "baddeploy", System: system, Kind: kind.Name, Fault: kind.Fault, Clients: opt.Clients,
			PerConnection: opt.PerConnection, IntervalMS: ms(opt.Interval)}}
	e.logf("baddeploy: %s: %s (ORDERS_FAULT=%s), %d clients reconnecting every %d requests", name, system, kind.Fault, opt.Clients, opt.PerConnection)

	// The good version, serving.
	var (
		addr  string
		bt    *batonTarget
		naive *ordersTarget
		t     target
	)
	switch system {
	case "naive":
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
		if naive, err = startOrders(ctx, e, dir, b.db, addr); err != nil {
			return nil, err
		}
		b.r.OldPID, t = naive.cur.pid, naive
	case "bake", "nobake":
		metricsAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if bt, err = startBatonConfig(ctx, e, dir, badConfig(e.orders, b.db, metricsAddr, system == "bake", opt, ""), metricsAddr, []string{"orders"}); err != nil {
			return nil, err
		}
		sts, err := bt.ctl.status(ctx)
		if err != nil {
			bt.kill()
			return nil, err
		}
		addr, b.r.OldPID, t = bt.addr(), sts[0].PID, bt
	default:
		return nil, fmt.Errorf("no system %q", system)
	}
	defer t.kill()

	load := loadgen.Start(ctx, loadgen.Config{Addr: addr, Clients: opt.Clients, PerConnection: opt.PerConnection,
		IDPrefix: fmt.Sprintf("bad-%s-%d", name, time.Now().UnixNano()), Observe: b.mon.observe})
	defer load.Stop()
	share := startCPUShare()
	start := time.Now()
	if err := sleepUntil(ctx, start.Add(opt.Before)); err != nil {
		return nil, err
	}

	switch system {
	case "bake":
		err = b.deployBake(ctx, bt)
	case "nobake":
		err = b.deployNoBake(ctx, bt)
	case "naive":
		err = b.deployNaive(ctx, naive)
	}
	if err != nil {
		return nil, err
	}
	if err := sleepUntil(ctx, time.Now().Add(opt.After)); err != nil {
		return nil, err
	}
	b.r.ServingPID = b.servingPID(ctx, addr)
	b.r.ColdStart = b.r.ServingPID != b.r.OldPID
	res := load.Stop()
	b.r.DurationS = round(time.Since(start).Seconds(), 1)
	b.r.OthersCPU = share.othersPercent()
	b.r.Requests, b.r.OK, b.r.FailedByKind, b.r.Examples, b.r.Acked = res.Requests, res.OK, res.Failed, res.Examples, len(res.Acked)
	for k, n := range res.Failed {
		if strings.HasPrefix(k, "status_5") {
			b.r.Answered5xx += n
		} else {
			b.r.Failed += n
		}
	}
	b.r.Refused = res.Failed["connect"]

	// What a crashed process acknowledged is in its journal: the
	// serving one replays it (it looks every second). Wait for that
	// before the final stop, which would leave it to the next start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing, err := loadgen.MissingOrders(b.db, res.Acked)
		if err != nil || len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		if err := sleepUntil(ctx, time.Now().Add(100*time.Millisecond)); err != nil { // polling the database, not synchronising
			return nil, err
		}
	}
	if _, err := t.stop(); err != nil {
		return nil, err
	}
	missing, err := loadgen.MissingOrders(b.db, res.Acked)
	if err != nil {
		return nil, fmt.Errorf("lost writes: %w", err)
	}
	b.r.LostWrites = len(missing)
	return b.r, nil
}

// deployBake deploys the bad version under baton with a bake: a config
// change and a reload, whose answer is the bake's verdict.
func (b *badRun) deployBake(ctx context.Context, bt *batonTarget) error {
	if err := b.writeConfig(bt, true, b.kind.Fault); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.mon.arm()
	type reply struct {
		res []reloadResult
		err error
		at  time.Time
	}
	done := make(chan reply, 1)
	go func() {
		res, err := bt.ctl.reload(ctx, "orders")
		done <- reply{res, err, time.Now()}
	}()
	// Follow the bake: the new generation's pid, when it began, and the
	// requests it reported.
	var (
		pid       int
		bakeStart time.Time
		reqs      uint64
		reqsAt    time.Time
		exited    = make(chan time.Time, 1)
		rep       reply
	)
	tick := time.NewTicker(20 * time.Millisecond) // polling baton's status, not synchronising
	defer tick.Stop()
wait:
	for {
		select {
		case rep = <-done:
			break wait
		case <-tick.C:
			sts, err := bt.ctl.status(ctx)
			if err != nil || len(sts) == 0 || sts[0].Bake == nil || sts[0].Bake.Verdict != "baking" {
				continue
			}
			bk := sts[0].Bake
			if pid == 0 {
				pid, bakeStart = bk.PID, time.Now().Add(-bk.Duration)
				go watchExit(ctx, pid, exited)
			}
			if bk.Requests != reqs {
				reqs, reqsAt = bk.Requests, time.Now()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if rep.err == nil {
		b.r.Reason = "passed: the bad version took over"
		return nil
	}
	if len(rep.res) == 0 || !strings.Contains(rep.res[0].Error, "reverted") {
		return fmt.Errorf("the deploy: %v", rep.err)
	}
	b.r.Reverted, b.r.Reason = true, rep.res[0].Error
	if pid == 0 { // judged before the first look
		sts, err := bt.ctl.status(ctx)
		if err != nil || sts[0].Bake == nil {
			return fmt.Errorf("no bake in the status: %v", err)
		}
		pid, bakeStart = sts[0].Bake.PID, rep.at.Add(-sts[0].Bake.Duration)
		go watchExit(ctx, pid, exited)
	}
	var gone time.Time
	select {
	case gone = <-exited:
	case <-time.After(exitTimeout):
		return fmt.Errorf("the reverted generation (pid %d) still runs after %v", pid, exitTimeout)
	}
	b.times(b.sign(bakeStart, gone), rep.at, later(rep.at, gone))
	if n := b.mon.count(bakeStart, reqsAt); n > 0 && !reqsAt.IsZero() {
		b.r.BakeRequests, b.r.BakeSeenMS = reqs, ms(reqsAt.Sub(bakeStart))
		b.r.NewShare = round(float64(reqs)/float64(n), 3)
	}
	return nil
}

// deployNoBake deploys the bad version under baton without a bake; the
// monitor notices it and reverts the config, another handover.
func (b *badRun) deployNoBake(ctx context.Context, bt *batonTarget) error {
	if err := b.writeConfig(bt, false, b.kind.Fault); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.mon.arm()
	if _, err := bt.ctl.reload(ctx, "orders"); err != nil {
		return fmt.Errorf("the deploy: %w", err)
	}
	serving := time.Now()
	sts, err := bt.ctl.status(ctx)
	if err != nil {
		return err
	}
	pids := []int{sts[0].PID}
	exited := make(chan time.Time, 1)
	go watchExit(ctx, pids[0], exited)
	decided, why, exitAt, err := b.monitor(ctx, serving, exited)
	if err != nil || decided.IsZero() {
		return err
	}
	b.r.Reverted, b.r.Reason = true, "monitor: "+why
	// A crashed version may have been restarted meanwhile: its pid too.
	if sts, err := bt.ctl.status(ctx); err == nil && sts[0].PID != 0 && sts[0].PID != pids[0] {
		pids = append(pids, sts[0].PID)
	}
	if err := b.writeConfig(bt, false, ""); err != nil {
		return err
	}
	if _, err := bt.ctl.reload(ctx, "orders"); err != nil {
		return fmt.Errorf("the revert: %w", err)
	}
	ready := time.Now()
	ends, err := waitGone(ctx, pids, exitTimeout)
	if err != nil {
		return fmt.Errorf("the bad version: %w", err)
	}
	end := ready
	for _, t := range ends {
		end = later(end, t)
	}
	b.times(b.sign(serving, exitAt), decided, end)
	return nil
}

// deployNaive stops the good version and starts the bad one; the
// monitor notices it, and the good one is started again the same way.
func (b *badRun) deployNaive(ctx context.Context, o *ordersTarget) error {
	o.env = []string{"ORDERS_FAULT=" + b.kind.Fault}
	b.mon.arm()
	h, err := o.handover(ctx)
	if err != nil {
		return fmt.Errorf("the deploy: %w", err)
	}
	bad := o.cur
	exited := make(chan time.Time, 1)
	go func() {
		select {
		case <-bad.done:
			exited <- time.Now()
		case <-ctx.Done():
		}
	}()
	decided, why, exitAt, err := b.monitor(ctx, h.serving, exited)
	if err != nil || decided.IsZero() {
		return err
	}
	b.r.Reverted, b.r.Reason = true, "monitor: "+why
	served := h.serving
	o.env = nil
	h, err = o.handover(ctx)
	if err != nil {
		return fmt.Errorf("the revert: %w", err)
	}
	b.times(b.sign(served, exitAt), decided, h.serving)
	return nil
}

// monitor plays an ideal operator for the systems without a bake: it
// sees every answer the clients get, and the bad process's exit, and
// applies the bake's rule at the bake's interval from the moment the
// bad version serves. It returns when it decided, or a zero time when
// it did not within the bake's duration.
func (b *badRun) monitor(ctx context.Context, serving time.Time, exited <-chan time.Time) (decided time.Time, why string, exitAt time.Time, err error) {
	base := b.mon.baselineP99()
	next := serving.Add(b.opt.Interval)
	giveUp := serving.Add(b.opt.BakeFor)
	tick := time.NewTicker(5 * time.Millisecond) // the monitor's clock, not synchronisation
	defer tick.Stop()
	for {
		select {
		case exitAt = <-exited:
			return time.Now(), "the bad version exited", exitAt, nil
		case now := <-tick.C:
			if now.Before(next) {
				continue
			}
			next = next.Add(b.opt.Interval)
			if why := b.mon.judge(serving, base); why != "" {
				return now, why, time.Time{}, nil
			}
			if now.After(giveUp) {
				b.r.Reason = fmt.Sprintf("monitor: nothing noticed in %v", b.opt.BakeFor)
				return time.Time{}, "", time.Time{}, nil
			}
		case <-ctx.Done():
			return time.Time{}, "", time.Time{}, ctx.Err()
		}
	}
}

// sign returns the failure's first sign for the kind: the bad process's
// exit (a crash), the first 500 a client read, or, for a slow version,
// the fault's latency after it began serving: its first answers come
// then, and a client cannot tell them from a good version's answers
// slowed by a busy machine.
func (b *badRun) sign(served, exitAt time.Time) time.Time {
	switch b.kind.Name {
	case "crash":
		return exitAt
	case "slow":
		if served.IsZero() {
			return served
		}
		return served.Add(b.kind.Latency)
	}
	return b.mon.first5xxAt()
}

// times records the sign, the revert and the recovery.
func (b *badRun) times(sign, revert, recovered time.Time) {
	if sign.IsZero() {
		return
	}
	// A crash's sign is seen by polling for the process (every
	// millisecond); baton's reaper may see it first: 0, not less.
	b.r.SignAfterMS = ms(sign.Sub(b.mon.armedAt()))
	b.r.SignToRevert = ms(max(0, revert.Sub(sign)))
	b.r.SignToRecover = ms(max(0, recovered.Sub(sign)))
}

// writeConfig rewrites baton's config with or without the fault.
func (b *badRun) writeConfig(bt *batonTarget, bake bool, fault string) error {
	return os.WriteFile(filepath.Join(b.dir, "config.hcl"), []byte(badConfig(b.e.orders, b.db, bt.metricsAddr, bake, b.opt, fault)), 0o644)
}

// servingPID asks who serves, on new connections, five times: the pid
// when every answer came from it, 0 otherwise.
func (b *badRun) servingPID(ctx context.Context, addr string) int {
	c := newHealthClient()
	pid := 0
	for range 5 {
		p, err := healthPID(ctx, c, addr)
		if err != nil || (pid != 0 && p != pid) {
			return 0
		}
		pid = p
	}
	return pid
}

// watchExit sends when pid is gone (baton reaps its children at once).
func watchExit(ctx context.Context, pid int, exited chan<- time.Time) {
	ends, err := waitGone(ctx, []int{pid}, 10*time.Minute)
	if err == nil {
		exited <- ends[0]
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// badMonitor sees each answer of the load as it comes (loadgen's
// Observe): the first signs of a failure, the baseline before the
// deploy, and what the monitor judges.
type badMonitor struct {
	mu       sync.Mutex
	obs      []badObs // every answer, in the order they came
	armed    time.Time
	first5xx time.Time
}

type badObs struct {
	at     time.Time // answered
	lat    time.Duration
	status int
}

func (m *badMonitor) observe(s loadgen.Sample) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.obs = append(m.obs, badObs{now, s.Latency, s.Status})
	if m.armed.IsZero() {
		return
	}
	if s.Status >= 500 && m.first5xx.IsZero() {
		m.first5xx = now
	}
}

// arm marks the deploy's trigger: signs count from now.
func (m *badMonitor) arm() {
	m.mu.Lock()
	m.armed = time.Now()
	m.mu.Unlock()
}

func (m *badMonitor) armedAt() time.Time    { m.mu.Lock(); defer m.mu.Unlock(); return m.armed }
func (m *badMonitor) first5xxAt() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.first5xx }

// window returns the answers from since (inclusive) to until
// (exclusive; zero: now) as counts and latencies.
func (m *badMonitor) window(since, until time.Time) (total, errs int64, lats []time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.obs {
		if o.at.Before(since) || (!until.IsZero() && !o.at.Before(until)) {
			continue
		}
		total++
		if o.status >= 500 {
			errs++
		}
		lats = append(lats, o.lat)
	}
	return total, errs, lats
}

// count returns how many requests were answered from since to until.
func (m *badMonitor) count(since, until time.Time) int64 {
	n, _, _ := m.window(since, until)
	return n
}

// baselineP99 is the clients' p99 before the deploy.
func (m *badMonitor) baselineP99() time.Duration {
	_, _, lats := m.window(time.Time{}, m.armedAt())
	sortDurations(lats)
	return percentile(lats, 99)
}

// judge applies the bake's rule to what the clients saw since the bad
// version serves: why it fails, or "".
func (m *badMonitor) judge(since time.Time, baseP99 time.Duration) string {
	total, errs, lats := m.window(since, time.Time{})
	if total >= badMinRequests {
		if share := float64(errs) / float64(total); share > badMaxErrors {
			return fmt.Sprintf("5xx on %.1f%% of %d requests", 100*share, total)
		}
	}
	if total >= badMinP99Requests {
		sortDurations(lats)
		if p99 := percentile(lats, 99); p99 > badP99Floor && float64(p99) > badMaxP99*float64(baseP99) {
			return fmt.Sprintf("p99 latency %v, above %gx the %v before", p99.Round(time.Millisecond), badMaxP99, baseP99.Round(100*time.Microsecond))
		}
	}
	return ""
}

func printBadDeploy(w io.Writer, rs []*badResult) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "baddeploy: no scenario ran")
		return
	}
	r0 := rs[0]
	fmt.Fprintf(w, "bad deploys: %d clients POSTing orders without retries, each on a new connection every %d requests; the bake's interval (and the monitor's) %v\n\n",
		r0.Clients, r0.PerConnection, time.Duration(r0.IntervalMS*float64(time.Millisecond)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tsystem\trequests\t5xx\tfailed\trefused\tlost writes\tsign→revert ms\tsign→recovered ms\told pid serves\tnew gen's share\tothers' CPU\t")
	for _, r := range rs {
		revert, recovered, share := "-", "-", "-"
		if r.Reverted && r.SignAfterMS > 0 {
			revert, recovered = fmt.Sprintf("%.0f", r.SignToRevert), fmt.Sprintf("%.0f", r.SignToRecover)
		}
		if !r.Reverted {
			revert, recovered = "never", "never"
		}
		if r.NewShare > 0 {
			share = fmt.Sprintf("%.0f%%", 100*r.NewShare)
		}
		old := "no (cold start)"
		if !r.ColdStart {
			old = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d of %d\t%s\t%s\t%s\t%s\t%.1f%%\t\n", r.Kind, r.System, r.Requests, r.Answered5xx, r.Failed, r.Refused,
			r.LostWrites, r.Acked, revert, recovered, old, share, r.OthersCPU)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rs {
		parts := []string{r.Reason}
		if r.SignAfterMS > 0 {
			parts = append(parts, fmt.Sprintf("first sign %.0f ms after the deploy", r.SignAfterMS))
		}
		if r.Failed > 0 {
			parts = append(parts, "failed by kind: "+kinds(failedOnly(r.FailedByKind)))
		}
		if r.BakeRequests > 0 {
			parts = append(parts, fmt.Sprintf("the new generation had answered %d requests %.0f ms into its bake, by its counters", r.BakeRequests, r.BakeSeenMS))
		}
		fmt.Fprintf(w, "%s %s (ORDERS_FAULT=%s): %s\n", r.Kind, r.System, r.Fault, strings.Join(parts, "; "))
	}
	for _, r := range rs {
		if r.System != "bake" {
			continue
		}
		interval := time.Duration(r.IntervalMS * float64(time.Millisecond))
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "MISSED"
		}
		fmt.Fprintf(w, "\nbake, %s, against the targets:\n", r.Kind)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  reverted within one interval of the sign\t%.0f ms\t≤ %v\t%s\n", r.SignToRevert, interval, verdict(r.Reverted && r.SignToRevert <= ms(interval)))
		fmt.Fprintf(tw, "  refused connections\t%d\t0\t%s\n", r.Refused, verdict(r.Refused == 0))
		fmt.Fprintf(tw, "  the old pid serves (no cold start)\t%v\tyes\t%s\n", !r.ColdStart, verdict(!r.ColdStart))
		fmt.Fprintf(tw, "  lost writes\t%d\t0\t%s\n", r.LostWrites, verdict(r.LostWrites == 0))
		tw.Flush()
	}
}

// failedOnly drops the 5xx answers from failures by kind.
func failedOnly(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if !strings.HasPrefix(k, "status_5") {
			out[k] = v
		}
	}
	return out
}
