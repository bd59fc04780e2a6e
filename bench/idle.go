package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
)

// idleOptions are the flags of -idle.
type idleOptions struct {
	Clients   int           // keep-alive clients, one http.Transport each
	Handovers int           // per scenario
	MaxPause  time.Duration // each client pauses a random time up to this after each request
	Interval  time.Duration // between the end of a handover and the next
	Proxy     bool          // also through nginx
	Fronts    []string      // "clients", "nginx"; default both (nginx when Proxy)
	Kinds     []string      // "direct", "naive", "baton"; default all
}

// idleResult is what the clients of one idle-pool scenario saw.
type idleResult struct {
	Mode      string  `json:"mode"`     // "idle"
	Scenario  string  `json:"scenario"` // direct, naive, baton; nginx-… through nginx
	Front     string  `json:"front"`    // "clients": the clients reach the target; "nginx": through nginx
	Clients   int     `json:"clients"`
	MaxPauseS float64 `json:"max_pause_s"`
	Handovers int     `json:"handovers"`
	DurationS float64 `json:"duration_s"`

	Requests     int64            `json:"requests"`
	OK           int64            `json:"ok"`
	Failed       int64            `json:"failed"`
	FailedByKind map[string]int64 `json:"failed_by_kind"` // connect, eof, reset, status_502, …
	Examples     []string         `json:"failure_examples,omitempty"`
	Acked        int              `json:"acked"`
	LostWrites   int              `json:"lost_writes"`

	// Dials are the TCP connections the clients opened after each had
	// its first one (its warm-up): reconnects. Through nginx these are
	// the connections to nginx, which never restarts.
	Dials            int64   `json:"dials"`
	DialsPerHandover float64 `json:"dials_per_handover"`

	// OldLifetime: from the reload reply (the new generation is ready)
	// until the old generation's process is gone (baton only).
	OldLifetime      pctStats `json:"old_lifetime_ms"`
	TriggerToServing pctStats `json:"trigger_to_serving_ms"`
	OldExitCodes     []int    `json:"old_exit_codes"`
	OthersCPU        float64  `json:"others_cpu_percent"`
	Machine          *machine `json:"machine,omitempty"`
}

// idle runs the idle-pool scenarios: clients that keep one keep-alive
// connection each and sit idle between requests, as http.Transport's pool
// and the upstream pools of reverse proxies do, across handovers. It
// runs each kind of target (direct, naive, baton), reached directly and
// through nginx, one after another, and calls emit with each result.
func idle(ctx context.Context, e *env, opt idleOptions, emit func(*idleResult)) ([]*idleResult, error) {
	fronts := opt.Fronts
	if len(fronts) == 0 {
		fronts = []string{"clients"}
		if opt.Proxy {
			fronts = append(fronts, "nginx")
		}
	}
	kinds := opt.Kinds
	if len(kinds) == 0 {
		kinds = []string{"direct", "naive", "baton"}
	}
	var out []*idleResult
	for _, front := range fronts {
		if front == "nginx" {
			if _, err := findNginx(); err != nil {
				e.logf("idle: skipping the scenarios through nginx: %v", err)
				continue
			}
		}
		for _, kind := range kinds {
			r, err := idleScenario(ctx, e, opt, kind, front)
			if err != nil {
				return out, fmt.Errorf("idle %s via %s: %w", kind, front, err)
			}
			if emit != nil {
				emit(r)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func idleScenario(ctx context.Context, e *env, opt idleOptions, kind, front string) (*idleResult, error) {
	name := kind
	if front == "nginx" {
		name = "nginx-" + kind
	}
	dir, err := e.dir("idle-" + name)
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "orders.db")
	var t target
	switch kind {
	case "direct", "naive":
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if t, err = startOrders(ctx, e, dir, db, addr); err != nil {
			return nil, err
		}
	case "baton":
		if t, err = startBaton(ctx, e, dir, []batonProgram{{name: "orders", db: db, addr: "127.0.0.1:0"}}); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("no target %q", kind)
	}
	defer t.kill()
	addr := t.addr()
	var proxy *nginxProxy
	if front == "nginx" {
		if proxy, err = startNginx(ctx, filepath.Join(dir, "nginx"), addr); err != nil {
			return nil, err
		}
		defer proxy.stop()
		addr = proxy.address
	}
	e.logf("idle: %s: %d clients, pauses up to %v, %s", name, opt.Clients, opt.MaxPause, plural(opt.Handovers, "handover"))

	p := startPool(ctx, addr, opt.Clients, opt.MaxPause, fmt.Sprintf("idle-%s-%d", name, time.Now().UnixNano()))
	defer p.stop()
	if err := p.waitWarm(ctx, startTimeout); err != nil {
		return nil, err
	}
	baseDials := p.dials.Load()
	share := startCPUShare()
	start := time.Now()
	r := &idleResult{Mode: "idle", Scenario: name, Front: front, Clients: opt.Clients, MaxPauseS: opt.MaxPause.Seconds(), OldExitCodes: []int{}}
	var lifetimes, serving []time.Duration
	for i := 1; i <= opt.Handovers; i++ {
		if err := sleepUntil(ctx, time.Now().Add(opt.Interval)); err != nil {
			return nil, err
		}
		if kind == "direct" {
			continue
		}
		h, err := t.handover(ctx)
		if err != nil {
			return nil, fmt.Errorf("handover %d: %w", i, err)
		}
		r.Handovers++
		serving = append(serving, h.serving.Sub(h.trigger))
		if kind == "baton" {
			lifetimes = append(lifetimes, h.end.Sub(h.serving))
		}
		r.OldExitCodes = append(r.OldExitCodes, h.oldCode)
		if i%5 == 0 || i == opt.Handovers {
			e.logf("idle: %s: %d handovers, %d requests failed, %d reconnects", name, i, p.failures(), p.dials.Load()-baseDials)
		}
	}
	// The load goes on for as long again as a client's longest pause: the
	// connections of the last handover are used once more.
	if err := sleepUntil(ctx, time.Now().Add(opt.MaxPause+opt.Interval)); err != nil {
		return nil, err
	}
	res := p.stop()
	r.DurationS = round(time.Since(start).Seconds(), 1)
	r.OthersCPU = share.othersPercent()
	r.Requests, r.OK, r.Failed, r.FailedByKind, r.Examples = res.requests, res.ok, res.failedTotal(), res.failed, res.examples
	r.Dials = res.dials - baseDials
	if r.Handovers > 0 {
		r.DialsPerHandover = round(float64(r.Dials)/float64(r.Handovers), 2)
	}
	r.OldLifetime, r.TriggerToServing = pcts(lifetimes), pcts(serving)
	if proxy != nil {
		// Before the target: a final stop has no successor, and would
		// wait out its drain for nginx's idle connections.
		proxy.stop()
	}
	if _, err := t.stop(); err != nil {
		return nil, err
	}
	missing, err := loadgen.MissingOrders(db, res.acked)
	if err != nil {
		return nil, fmt.Errorf("lost writes: %w", err)
	}
	r.Acked, r.LostWrites = len(res.acked), len(missing)
	return r, nil
}

// pool is the idle-pool load: clients with a net/http Transport each,
// POSTing an order, then pausing a random time, and again. The
// Transport does not retry a POST (its body is not replayable), so every
// failure the server causes is seen.
type pool struct {
	dials   atomic.Int64 // TCP connections opened
	warm    atomic.Int64 // clients that had their first answer
	clients int
	quit    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	res     poolResult
	stopped poolResult
}

type poolResult struct {
	requests, ok int64
	failed       map[string]int64
	examples     []string
	acked        []string
	dials        int64
}

func (r *poolResult) failedTotal() int64 {
	var n int64
	for _, v := range r.failed {
		n += v
	}
	return n
}

func startPool(ctx context.Context, addr string, clients int, maxPause time.Duration, prefix string) *pool {
	p := &pool{clients: clients, quit: make(chan struct{}), res: poolResult{failed: map[string]int64{}}}
	for i := 0; i < clients; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.client(ctx, addr, i, maxPause, prefix)
		}()
	}
	return p
}

func (p *pool) client(ctx context.Context, addr string, i int, maxPause time.Duration, prefix string) {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, address)
			if err == nil {
				p.dials.Add(1)
			}
			return c, err
		},
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	url := "http://" + addr + "/orders"
	first := true
	for seq := 0; ; seq++ {
		select {
		case <-p.quit:
			return
		case <-ctx.Done():
			return
		default:
		}
		id := fmt.Sprintf("%s-%d-%d", prefix, i, seq)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"id":"`+id+`","item":"tea","qty":1}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		kind, example := "", ""
		if err != nil {
			kind, example = failureKind(err), err.Error()
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				kind, example = fmt.Sprintf("status_%d", resp.StatusCode), resp.Status
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.res.requests++
		if kind == "" {
			p.res.ok++
			p.res.acked = append(p.res.acked, id)
		} else {
			p.res.failed[kind]++
			if len(p.res.examples) < 5 {
				p.res.examples = append(p.res.examples, example)
			}
		}
		p.mu.Unlock()
		if first && kind == "" {
			first = false
			p.warm.Add(1)
		}
		pause := time.Duration(rng.Int64N(int64(maxPause) + 1))
		select { // the load's pace, not synchronisation
		case <-time.After(pause):
		case <-p.quit:
			return
		case <-ctx.Done():
			return
		}
	}
}

// failureKind names a client error: connect (refused), eof (the server
// closed the connection), reset, timeout, or other.
func failureKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "server closed"):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

func (p *pool) failures() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res.failedTotal()
}

// waitWarm waits until every client had its first answer.
func (p *pool) waitWarm(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for p.warm.Load() < int64(p.clients) {
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			return fmt.Errorf("only %d of %d clients were answered within %v: %v", p.warm.Load(), p.clients, timeout, p.res.examples)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling the load, not synchronising
		}
	}
	return nil
}

// stop ends the load once each client's request under way is answered,
// and returns what the clients saw. It may be called again.
func (p *pool) stop() poolResult {
	p.once.Do(func() {
		close(p.quit)
		p.wg.Wait()
		p.mu.Lock()
		p.stopped = p.res
		p.stopped.dials = p.dials.Load()
		p.mu.Unlock()
	})
	return p.stopped
}

func printIdle(w io.Writer, rs []*idleResult) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "idle: no scenario ran")
		return
	}
	r0, handovers := rs[0], 0
	for _, r := range rs {
		handovers = max(handovers, r.Handovers)
	}
	fmt.Fprintf(w, "idle pools: %d clients, each with its own net/http Transport (one keep-alive connection), POST /orders, a random pause of 0 to %v after each request; %s per scenario (naive: restarts)\n\n",
		r0.Clients, time.Duration(r0.MaxPauseS*float64(time.Second)), plural(handovers, "handover"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tfailed\t502\tlost writes\treconnects\tper handover\told gen after successor ready p50 ms\tp99 ms\tmax ms\tothers' CPU\t")
	for _, r := range rs {
		life := "-\t-\t-"
		if r.OldLifetime.N > 0 {
			life = fmt.Sprintf("%.0f\t%.0f\t%.0f", r.OldLifetime.P50, r.OldLifetime.P99, r.OldLifetime.Max)
		}
		dials, per := fmt.Sprint(r.Dials), fmt.Sprint(r.DialsPerHandover)
		if r.Front == "nginx" {
			dials, per = "-", "-" // nginx itself never restarts
		} else if r.Handovers == 0 {
			per = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d of %d\t%s\t%s\t%s\t%.1f%%\t\n", r.Scenario, r.Requests, r.Failed, r.FailedByKind["status_502"],
			r.LostWrites, r.Acked, dials, per, life, r.OthersCPU)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rs {
		if r.Failed > 0 {
			fmt.Fprintf(w, "%s: failed by kind: %s; e.g. %s\n", r.Scenario, kinds(r.FailedByKind), strings.Join(r.Examples, " | "))
		}
		if len(r.OldExitCodes) > 0 {
			fmt.Fprintf(w, "%s: trigger→serving p50 %.0f ms, max %.0f ms; old processes' exit statuses: %s\n", r.Scenario, r.TriggerToServing.P50, r.TriggerToServing.Max, exitSummary(r.OldExitCodes))
		}
	}
}
