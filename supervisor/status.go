package supervisor

import (
	"time"

	"github.com/baton-run/baton/supervisor/control"
)

// status builds the program's status; it runs on the program's goroutine.
func (p *program) status() control.ProgramStatus {
	st := control.ProgramStatus{
		Name:      p.name,
		Restarts:  p.stats.Restarts,
		Handovers: p.stats.Handovers,
		Rollbacks: p.stats.Rollbacks,
		LastExit:  p.stats.LastExit,
		LastError: p.stats.LastError,
		Reason:    p.exitedBy,
	}
	for i, l := range p.cfg.Listeners {
		addr := l.Address
		if i < len(p.socks) {
			addr = p.socks[i].bound
		}
		st.Listeners = append(st.Listeners, control.ListenerInfo{Name: l.Name, Address: addr})
	}
	switch {
	case (p.stopping || p.paused) && len(p.gens) == 0:
		st.State = control.StateStopped
	case p.stopping || p.paused:
		st.State = control.StateStopping
	case p.current != nil:
		st.State = control.StateRunning
	case p.pending != nil:
		st.State = control.StateStarting
	case p.restartT != nil:
		st.State = control.StateBackoff
		st.RestartIn = time.Until(p.restartAt)
	case p.awaitBuild:
		st.State = control.StateBuilding
	default:
		st.State = control.StateExited
	}
	if g := p.current; g != nil {
		started := g.started
		st.Generation, st.PID, st.StartedAt, st.Status = g.n, g.pid, &started, g.status
	}
	if g := p.pending; g != nil {
		st.Pending = g.n
	}
	for n, g := range p.gens {
		if g != p.current && g != p.pending {
			st.Draining = append(st.Draining, n)
		}
	}
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
	s.mu.Lock()
	var progs []*program
	for _, n := range s.order() {
		progs = append(progs, s.programs[n])
	}
	s.mu.Unlock()
	out := make([]control.ProgramStatus, 0, len(progs))
	for _, p := range progs {
		out = append(out, p.statusNow())
	}
	return out
}
