package supervisor

import (
	"sort"
	"time"

	"github.com/baton-run/baton/supervisor/control"
)

// status builds the program's status; it runs on the program's goroutine.
// The state is the phase's, one to one.
func (p *program) status() control.ProgramStatus {
	st := control.ProgramStatus{
		Name:      p.name,
		State:     p.phase.String(),
		Restarts:  p.stats.Restarts,
		Handovers: p.stats.Handovers,
		Rollbacks: p.stats.Rollbacks,
		Reverts:   p.stats.Reverts,

		LivenessFailures:   p.stats.LivenessFailures,
		MemoryReplacements: p.stats.MemoryReplacements,
		LastLiveness:       p.stats.LastLiveness,
		LastExit:           p.stats.LastExit,
		LastError:          p.stats.LastError,
		Reason:             p.exitReason,
	}
	for i, l := range p.cfg.Listeners {
		addr := p.lease.bound(i)
		if addr == "" {
			addr = l.Address
		}
		st.Listeners = append(st.Listeners, control.ListenerInfo{Name: l.Name, Address: addr})
	}
	if p.phase == phaseBackoff {
		st.RestartIn = time.Until(p.restartAt)
	}
	if p.phase == phaseWaiting {
		st.Reason = p.waitReason
	}
	st.After = p.cfg.After
	if g := p.current; g != nil {
		started := g.started
		st.Generation, st.PID, st.StartedAt, st.Status, st.Memory = g.n, g.pid, &started, g.status, g.rss
	}
	if a := p.attempt; a != nil {
		st.Pending = a.gen.n
	}
	for n, g := range p.gens {
		if g != p.current && (p.attempt == nil || g != p.attempt.gen) && (p.baking == nil || g != p.baking.gen) {
			st.Draining = append(st.Draining, n)
		}
	}
	sort.Ints(st.Draining)
	st.Bake = p.bakeStatus()
	return st
}

// statusNow asks the program's goroutine for its status; after the
// program ended it reports it stopped.
func (p *program) statusNow() control.ProgramStatus {
	reply := make(chan control.ProgramStatus, 1)
	select {
	case p.events <- evStatus{reply}:
		return <-reply
	case <-p.quit:
		return control.ProgramStatus{Name: p.name, State: control.StateStopped}
	}
}

// Status reports every program, in config order.
func (s *Supervisor) Status() []control.ProgramStatus {
	var progs []*program
	reply := make(chan []*program, 1)
	if s.post(msgPrograms{reply}) {
		progs = <-reply
	} else {
		progs = s.final
	}
	out := make([]control.ProgramStatus, 0, len(progs))
	for _, p := range progs {
		out = append(out, p.statusNow())
	}
	return out
}
