package supervisor

import (
	"time"
)

// ProgramStatus is what Status reports about one program. Its JSON form is
// the contract of `baton status -json`.
type ProgramStatus struct {
	Name string `json:"name"` // the program block's label
	// State is one of the State… constants.
	State string `json:"state"`
	// Generation and PID are the current generation's: the newest that
	// became ready and still runs (0 when none does).
	Generation int        `json:"generation"`
	PID        int        `json:"pid"`
	StartedAt  *time.Time `json:"started_at"` // null when none serves
	// Restarts counts restarts after the serving generation exited on
	// its own; Handovers counts completed handovers.
	Restarts  int            `json:"restarts"`
	Handovers int            `json:"handovers"`
	Rollbacks int            `json:"rollbacks"`                      // new generations that failed while another served
	LastExit  *ExitRecord    `json:"last_exit"`                      // null until a generation exits
	Pending   int            `json:"pending_generation,omitempty"`   // starting, not ready yet
	Draining  []int          `json:"draining_generations,omitempty"` // old generations not exited yet
	Listeners []ListenerInfo `json:"listeners"`                      // as bound
	LastError string         `json:"last_error,omitempty"`           // the last failed start or handover
	// RestartIn is the wait left before the next restart, in backoff.
	RestartIn time.Duration `json:"restart_in_ns,omitempty"`
	// Why the program is down and not restarted (StateExited).
	Reason string `json:"reason,omitempty"`
	Status string `json:"status,omitempty"` // the current generation's last STATUS=
}

// ListenerInfo is one of a program's sockets.
type ListenerInfo struct {
	Name    string `json:"name"`    // the listener block's label
	Address string `json:"address"` // as bound
}

// status builds the program's status; it runs on the program's goroutine.
func (p *program) status() ProgramStatus {
	st := ProgramStatus{
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
		st.Listeners = append(st.Listeners, ListenerInfo{Name: l.Name, Address: addr})
	}
	switch {
	case (p.stopping || p.paused) && len(p.gens) == 0:
		st.State = StateStopped
	case p.stopping || p.paused:
		st.State = StateStopping
	case p.current != nil:
		st.State = StateRunning
	case p.pending != nil:
		st.State = StateStarting
	case p.restartT != nil:
		st.State = StateBackoff
		st.RestartIn = time.Until(p.restartAt)
	case p.awaitBuild:
		st.State = StateBuilding
	default:
		st.State = StateExited
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
func (p *program) statusNow() ProgramStatus {
	reply := make(chan ProgramStatus, 1)
	select {
	case p.events <- evStatus{reply}:
		return <-reply
	case <-p.quit:
		return ProgramStatus{Name: p.name, State: StateStopped}
	}
}

// Status reports every program, in config order.
func (s *Supervisor) Status() []ProgramStatus {
	s.mu.Lock()
	var progs []*program
	for _, n := range s.order() {
		progs = append(progs, s.programs[n])
	}
	s.mu.Unlock()
	out := make([]ProgramStatus, 0, len(progs))
	for _, p := range progs {
		out = append(out, p.statusNow())
	}
	return out
}
