package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

// Errors of a bake.
var (
	// ErrReverted: the new generation was ready but failed its bake (or
	// was reverted on request); it drains and the old one serves on.
	ErrReverted = errors.New("supervisor: reverted")
	// ErrNotBaking: promote or revert asked of a program that is not
	// baking.
	ErrNotBaking = errors.New("supervisor: program is not baking")
)

// bakeMinRequests is how many requests the new generation must have
// answered before its share of 5xx is judged: one error in the first
// three requests is not a verdict.
const bakeMinRequests = 20

// bakeMinP99Requests is how many requests each generation must have
// answered before their p99 latencies are compared: the new one over
// the bake; the old one over the bake too, or, when a slow new version
// holds the clients' connections and leaves it fewer, over its life.
const bakeMinP99Requests = 100

// bakeMinSlow is how many of the new generation's requests must be
// slower than max_p99 allows for a p99 verdict. Over a few hundred
// requests, 1% is two or three: one stall of a busy machine, or a
// process's first answers, slows as many as are in flight at that
// moment. Ten is a pattern, not a moment.
const bakeMinSlow = 10

// bakeP99Floor is the p99 latency below which a new generation is never
// judged slow: a process that just started answers in 500 µs where a
// warm one answers in 100 µs, five times slower and no regression.
const bakeP99Floor = 10 * time.Millisecond

// bake is a new generation that is ready and judged while the old one
// (the program's current) still serves: phaseBaking. Both accept on the
// shared socket, so the new one meets real traffic and the old one stays
// warm; the old one is only told to stop once the new one passed.
type bake struct {
	gen     *generation
	req     *request // answered with the verdict
	cfg     config.BakeConfig
	started time.Time
	tick    timer         // the next evaluation
	tickLen time.Duration // its delay
	// elapsed is the time baked, counted in the evaluations' delays (the
	// program's timers, which the tests control, not the wall clock).
	elapsed time.Duration
	// The counters of each generation when the bake began, once known:
	// the bake judges what came after.
	newBase, oldBase *protocol.Stats
}

// bakeOutcome is a finished bake, for status.
type bakeOutcome = control.BakeStatus

// startBake begins judging g, ready while old serves.
func (p *program) startBake(g *generation, req *request, cfg *config.BakeConfig) {
	b := &bake{gen: g, req: req, cfg: *cfg, started: time.Now()}
	p.baking = b
	p.enter(phaseBaking)
	if g.stats != nil {
		s := *g.stats
		b.newBase = &s
	}
	if old := p.current; old != nil && old.stats != nil {
		s := *old.stats
		b.oldBase = &s
	}
	p.armBakeTick(b, cfg.Interval)
	if cfg.Path != "" {
		g.cancelProbe = p.env.bakeProbe(g, cfg.Path, cfg.Listener, cfg.Interval, func(err error) { p.post(evBakeProbe{g, err}) })
	}
	p.log.Info("baking: the new generation serves beside the old one until its verdict",
		"gen", g.n, "pid", g.pid, "old_gen", p.current.n, "for", cfg.Duration)
	// A keep-alive connection stays with the process that accepted it:
	// the old one passes half of its connections, each once idle, to the
	// new one, so that clients that never reconnect (a proxy's pool)
	// reach it too; not to a new one that cannot take them.
	if g.handoff != nil {
		p.handoff.SetBaking(g.handoff)
		p.current.handoff.Share()
	}
}

// onBakeTick evaluates the bake under way; at its end it passes.
func (p *program) onBakeTick(id uint64) {
	b := p.baking
	if b == nil || id != b.tick.id {
		return
	}
	b.tick = timer{}
	b.elapsed += b.tickLen
	if why := p.judge(b, false); why != "" {
		p.endBake(false, why)
		return
	}
	if b.elapsed >= b.cfg.Duration {
		if why := p.judge(b, true); why != "" {
			p.endBake(false, why)
			return
		}
		p.endBake(true, fmt.Sprintf("passed %v of bake", b.cfg.Duration))
		return
	}
	p.armBakeTick(b, min(b.cfg.Interval, b.cfg.Duration-b.elapsed))
}

func (p *program) armBakeTick(b *bake, d time.Duration) {
	b.tickLen = d
	b.tick = p.armTimer(d, func(id uint64) event { return evBakeTick{id} })
}

// onBakeProbe takes the result of a probe answered by the new generation.
func (p *program) onBakeProbe(g *generation, err error) {
	b := p.baking
	if b == nil || b.gen != g {
		return
	}
	if err == nil {
		return
	}
	p.log.Warn("bake: the probe failed", "gen", g.n, "error", err)
	p.endBake(false, fmt.Sprintf("probe GET %s: %v", b.cfg.Path, err))
}

// judge returns why the new generation fails, from the counters both
// generations reported since the bake began, or "" when it does not.
// Before the end, too few requests are no verdict.
func (p *program) judge(b *bake, final bool) string {
	cur := b.gen.stats
	if cur == nil {
		return "" // it reports no counters: judged by its exit and the probe
	}
	var base protocol.Stats
	if b.newBase != nil {
		base = *b.newBase
	}
	d := cur.Sub(base)
	if d.Total >= bakeMinRequests || (final && d.Total > 0 && d.Errors > 0) {
		if share := float64(d.Errors) / float64(d.Total); share > b.cfg.MaxErrors {
			return fmt.Sprintf("5xx on %.1f%% of %d requests, above max_errors %.1f%%", 100*share, d.Total, 100*b.cfg.MaxErrors)
		}
	}
	if b.cfg.MaxP99 > 0 && p.current != nil && p.current.stats != nil && d.Total >= bakeMinP99Requests {
		od := *p.current.stats
		if b.oldBase != nil {
			if w := od.Sub(*b.oldBase); w.Total >= bakeMinP99Requests {
				od = w // the same window as the new one's
			}
		}
		if od.Total >= bakeMinP99Requests {
			np, op := d.Quantile(0.99), od.Quantile(0.99)
			limit := max(bakeP99Floor, time.Duration(b.cfg.MaxP99*float64(op)))
			if np > limit && d.Above(limit) >= bakeMinSlow {
				return fmt.Sprintf("p99 latency %v, above max_p99 %gx the old generation's %v", np, b.cfg.MaxP99, op)
			}
		}
	}
	return ""
}

// endBake ends the bake under way: passed, the new generation takes over
// and the old one drains; failed, the new one drains (never killed
// first: its acknowledged work is kept), its binary and config count as
// bad, and the old one serves on. Either way there was no cold start.
func (p *program) endBake(passed bool, why string) {
	b := p.baking
	p.baking = nil
	p.handoff.SetBaking(nil)
	b.tick.cancel()
	b.gen.stopProbe()
	g := b.gen
	took := time.Since(b.started)
	out := &bakeOutcome{Generation: g.n, PID: g.pid, Verdict: "passed", Reason: why, Duration: took}
	p.stats.LastBake = out
	p.env.baked(p.name, passed, took)
	if passed {
		old := p.current
		p.adopt(b.req)
		p.setCurrent(g) // before the old one is told to stop: its idle connections come here
		p.startMonitor(g)
		p.enter(phaseRunning)
		p.stats.Handovers++
		if old != nil {
			p.stop(old)
			old.byHandover = true
		}
		p.log.Info("bake passed: the new generation takes over, the old one drains", "gen", g.n, "pid", g.pid, "why", why, "baked", took.Round(time.Millisecond))
		p.env.observe(Event{Program: p.name, What: "ready", Generation: g.n})
		p.env.keep(p.name, g, func(k keptBinary) { p.post(evKept{k}) })
		res := p.serving(nil)
		res.ReadyIn = g.readyAt.Sub(g.started).Round(time.Millisecond)
		p.end(b.req, res)
		p.next()
		return
	}
	out.Verdict = "failed"
	p.stats.Reverts++
	p.stats.LastError = fmt.Sprintf("gen %d: reverted: %s", g.n, why)
	p.bad[g.key] = "reverted: " + why
	p.enter(phaseRunning)
	p.log.Error("revert: the new generation failed its bake and drains; the old one serves on", "gen", g.n, "pid", g.pid, "why", why, "serving_gen", p.current.n)
	p.stop(g)
	p.end(b.req, p.serving(fmt.Errorf("%w: gen %d: %s", ErrReverted, g.n, why)))
	p.next()
}

// abandonBake ends the bake under way without a verdict on the new
// generation's code: a newer request, or the program stops. The new
// generation drains; err answers the bake's request.
func (p *program) abandonBake(err error, why string) {
	b := p.baking
	p.baking = nil
	p.handoff.SetBaking(nil)
	b.tick.cancel()
	b.gen.stopProbe()
	p.stats.LastBake = &bakeOutcome{Generation: b.gen.n, PID: b.gen.pid, Verdict: "abandoned", Reason: why, Duration: time.Since(b.started)}
	p.log.Info("bake abandoned: the new generation drains", "gen", b.gen.n, "why", why)
	p.stop(b.gen)
	p.end(b.req, p.serving(fmt.Errorf("%w: gen %d: %s", err, b.gen.n, why)))
}

// onVerdict: an operator ends the bake (baton promote, baton revert).
func (p *program) onVerdict(pass bool, reply chan error) {
	if p.baking == nil {
		reply <- fmt.Errorf("%w: it is %s", ErrNotBaking, p.phase)
		return
	}
	if pass {
		p.endBake(true, "promoted on request")
	} else {
		p.endBake(false, "reverted on request")
	}
	reply <- nil
}

// bakeStatus reports the bake under way, or the last one.
func (p *program) bakeStatus() *control.BakeStatus {
	b := p.baking
	if b == nil {
		return p.stats.LastBake
	}
	st := &control.BakeStatus{Generation: b.gen.n, PID: b.gen.pid, Verdict: "baking", Duration: time.Since(b.started),
		EndsIn: b.cfg.Duration - b.elapsed}
	if b.gen.stats != nil {
		var base protocol.Stats
		if b.newBase != nil {
			base = *b.newBase
		}
		d := b.gen.stats.Sub(base)
		st.Requests, st.Errors, st.P99 = d.Total, d.Errors, d.Quantile(0.99)
	}
	return st
}
