package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
)

// scaleResult is the handover time with n programs under one baton.
type scaleResult struct {
	Mode     string `json:"mode"` // "scale"
	Programs int    `json:"programs"`
	// One program handed over at a time, the others serving: baton's
	// cost per handover as the number of programs grows.
	One durStats `json:"one_ready_in_ms"`
	// Every program handed over by one reload: each one's ready_in, the
	// reload's duration, and the time until every old generation exited.
	All        durStats `json:"all_ready_in_ms"`
	AllReload  durStats `json:"all_reload_ms"`
	AllDrained durStats `json:"all_drained_ms"`
	Rounds     int      `json:"rounds"`
	Baton      usage    `json:"baton"` // RSS and CPU over the whole mode
	ExitCode   int      `json:"exit_code"`
	Machine    *machine `json:"machine,omitempty"`
}

// scale starts one baton with n programs for each n of counts, each on its
// own free port, and hands them over: rounds times one program at a time
// (round-robin), then rounds times all of them at once. No load runs: this
// measures baton, the handover scenarios measure the clients' view.
func scale(ctx context.Context, e *env, counts []int, rounds int, emit func(*scaleResult)) ([]*scaleResult, error) {
	var out []*scaleResult
	for _, n := range counts {
		r, err := scaleOne(ctx, e, n, rounds)
		if err != nil {
			return out, fmt.Errorf("scale %d programs: %w", n, err)
		}
		out = append(out, r)
		if emit != nil {
			emit(r)
		}
	}
	return out, nil
}

func scaleOne(ctx context.Context, e *env, n, rounds int) (*scaleResult, error) {
	dir, err := e.dir(fmt.Sprintf("scale-%d", n))
	if err != nil {
		return nil, err
	}
	var progs []batonProgram
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("orders-%02d", i)
		progs = append(progs, batonProgram{name: name, db: filepath.Join(dir, name+".db"), addr: "127.0.0.1:0"})
	}
	e.logf("scale: %s under one baton, %s", plural(n, "program"), plural(rounds, "round"))
	b, err := startBaton(ctx, e, dir, progs)
	if err != nil {
		return nil, err
	}
	defer b.kill()
	sampler := sampleUsage(b.p.pid)
	r := &scaleResult{Mode: "scale", Programs: n, Rounds: rounds}

	var one []time.Duration
	for i := 0; i < rounds; i++ {
		hs, err := b.handoverPrograms(ctx, b.programs[i%n])
		if err != nil {
			return nil, err
		}
		one = append(one, hs[0].readyIn)
	}
	var all, reload, drained []time.Duration
	for i := 0; i < rounds; i++ {
		hs, err := b.handoverPrograms(ctx)
		if err != nil {
			return nil, err
		}
		last := hs[0].end
		for _, h := range hs {
			all = append(all, h.readyIn)
			if h.end.After(last) {
				last = h.end
			}
		}
		reload = append(reload, hs[0].serving.Sub(hs[0].trigger))
		drained = append(drained, last.Sub(hs[0].trigger))
	}
	r.One, r.All, r.AllReload, r.AllDrained = summary(one), summary(all), summary(reload), summary(drained)

	// Every program still answers, from the generation baton says serves.
	sts, err := b.ctl.status(ctx)
	if err != nil {
		return nil, err
	}
	c := newHealthClient()
	for _, st := range sts {
		if len(st.Listeners) == 0 {
			return nil, fmt.Errorf("%s: no listener in the status", st.Name)
		}
		pid, err := healthPID(ctx, c, st.Listeners[0].Address)
		if err != nil || pid != st.PID {
			return nil, fmt.Errorf("%s: /healthz answered by pid %d (%v), baton says %d serves", st.Name, pid, err, st.PID)
		}
	}
	r.Baton = sampler.finish()
	r.Baton.FDs, _ = openFDs(b.p.pid)
	r.Baton.Goroutines, _ = b.goroutines(ctx)
	if r.ExitCode, err = b.stop(); err != nil {
		return nil, err
	}
	return r, nil
}

// soakSample is baton's state after some handovers.
type soakSample struct {
	Handovers  int     `json:"handovers"`
	FDs        int     `json:"fds"`
	Goroutines int     `json:"goroutines"`
	RSSMiB     float64 `json:"rss_mib"`
}

// trend is the first, last and largest value of a sampled figure.
type trend struct {
	First float64 `json:"first"`
	Last  float64 `json:"last"`
	Max   float64 `json:"max"`
}

// soakResult is the outcome of many handovers in a row under load.
type soakResult struct {
	Mode             string           `json:"mode"` // "soak"
	Handovers        int              `json:"handovers"`
	Clients          int              `json:"clients"`
	DurationS        float64          `json:"duration_s"`
	Requests         int64            `json:"requests"`
	Failed           int64            `json:"failed"`
	FailedByKind     map[string]int64 `json:"failed_by_kind"`
	Acked            int              `json:"acked"`
	LostWrites       int              `json:"lost_writes"`
	TriggerToServing durStats         `json:"trigger_to_serving_ms"`
	Window           durStats         `json:"window_ms"`
	UncleanExits     int              `json:"unclean_exits"` // old generations that did not exit 0
	OthersCPU        float64          `json:"others_cpu_percent"`
	FDs              trend            `json:"fds"`
	Goroutines       trend            `json:"goroutines"`
	RSSMiB           trend            `json:"rss_mib"`
	Samples          []soakSample     `json:"samples"` // every sampleEvery handovers
	ExitCode         int              `json:"exit_code"`
	Machine          *machine         `json:"machine,omitempty"`
}

// sampleEvery is the soak's sampling period, in handovers.
const sampleEvery = 50

// soak hands the example over n times in a row under POST load, each
// handover complete (the old generation exited) before the next, and
// samples baton's descriptors, goroutines and RSS every sampleEvery
// handovers. They must stay flat: anything that grows with handovers is a
// leak.
func soak(ctx context.Context, e *env, n, clients int) (*soakResult, error) {
	dir, err := e.dir("soak")
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "orders.db")
	e.logf("soak: %d handovers in a row under POST load from %d clients", n, clients)
	b, err := startBaton(ctx, e, dir, []batonProgram{{name: "orders", db: db, addr: "127.0.0.1:0"}})
	if err != nil {
		return nil, err
	}
	defer b.kill()
	r := &soakResult{Mode: "soak", Clients: clients}
	sample := func(done int) error {
		s := soakSample{Handovers: done}
		var err error
		if s.FDs, err = settled(ctx, func() (int, error) { return openFDs(b.p.pid) }); err != nil {
			return err
		}
		rss, err := rssBytes(b.p.pid)
		if err != nil {
			return err
		}
		s.RSSMiB = mib(rss)
		if s.Goroutines, err = settled(ctx, func() (int, error) { return b.goroutines(ctx) }); err != nil {
			return err
		}
		r.Samples = append(r.Samples, s)
		return nil
	}
	if err := sample(0); err != nil {
		return nil, err
	}
	load := loadgen.Start(ctx, loadgen.Config{Addr: b.addr(), Clients: clients,
		IDPrefix: fmt.Sprintf("soak-%d", time.Now().UnixNano()), MaxRequests: int64(n) * 100_000})
	share := startCPUShare()
	start := time.Now()
	var serving, window []time.Duration
	for i := 1; i <= n; i++ {
		h, err := b.handover(ctx)
		if err != nil {
			load.Stop()
			return nil, fmt.Errorf("handover %d: %w", i, err)
		}
		serving = append(serving, h.serving.Sub(h.trigger))
		window = append(window, h.end.Sub(h.trigger))
		if h.oldCode != 0 {
			r.UncleanExits++
		}
		r.Handovers = i
		if i%sampleEvery == 0 || i == n {
			if err := sample(i); err != nil {
				load.Stop()
				return nil, err
			}
			last := r.Samples[len(r.Samples)-1]
			e.logf("soak: %d handovers, %d failed requests; baton: %d fds, %d goroutines, %.1f MiB", i, load.Failures(), last.FDs, last.Goroutines, last.RSSMiB)
		}
	}
	res := load.Stop()
	r.OthersCPU = share.othersPercent()
	r.DurationS = round(time.Since(start).Seconds(), 1)
	r.Requests, r.Failed, r.FailedByKind = res.Requests, res.FailedTotal(), res.Failed
	r.TriggerToServing, r.Window = summary(serving), summary(window)
	r.FDs = trendOf(r.Samples, func(s soakSample) float64 { return float64(s.FDs) })
	r.Goroutines = trendOf(r.Samples, func(s soakSample) float64 { return float64(s.Goroutines) })
	r.RSSMiB = trendOf(r.Samples, func(s soakSample) float64 { return s.RSSMiB })
	if r.ExitCode, err = b.stop(); err != nil {
		return nil, err
	}
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		return nil, fmt.Errorf("lost writes: %w", err)
	}
	r.Acked, r.LostWrites = len(res.Acked), len(missing)
	return r, nil
}

func trendOf(ss []soakSample, f func(soakSample) float64) trend {
	if len(ss) == 0 {
		return trend{}
	}
	t := trend{First: f(ss[0]), Last: f(ss[len(ss)-1]), Max: math.Inf(-1)}
	for _, s := range ss {
		t.Max = max(t.Max, f(s))
	}
	return t
}

// settled returns the least of a few readings of a count, 5 ms apart: the
// harness's last control request may hold a connection, and a goroutine to
// serve it, in baton for a moment after its answer.
func settled(ctx context.Context, read func() (int, error)) (int, error) {
	least := -1
	for i := 0; i < 3; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(5 * time.Millisecond): // spacing readings, not synchronising
			}
		}
		n, err := read()
		if err != nil {
			return 0, err
		}
		if least < 0 || n < least {
			least = n
		}
	}
	return least, nil
}
