package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/baton-run/baton/supervisor/control"
)

// The Supervisor's methods that act on one program. Each finds the
// program through the loop, then talks to the program's own goroutine.

// lookup returns the program called name.
func (s *Supervisor) lookup(name string) (*program, error) {
	reply := make(chan *program, 1)
	var p *program
	if s.post(msgProgram{name: name, reply: reply}) {
		p = <-reply
	} else {
		for _, q := range s.final {
			if q.name == name {
				p = q
			}
		}
	}
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	return p, nil
}

// ask sends req to p's goroutine as ev, and waits for the outcome or ctx.
func (p *program) ask(ctx context.Context, req *request, ev event) handoverResult {
	reply := make(chan handoverResult, 1)
	req.replies = append(req.replies, reply)
	select {
	case p.events <- ev:
	case <-p.quit:
		return handoverResult{Err: ErrStopping}
	case <-ctx.Done():
		return handoverResult{Err: ctx.Err()}
	}
	select {
	case r := <-reply:
		return r
	case <-ctx.Done():
		return handoverResult{Err: ctx.Err()}
	}
}

// resultOf turns a request's outcome into the Result of the control API.
func resultOf(name string, r handoverResult) control.Result {
	res := control.Result{Program: name, Generation: r.Gen, ReadyIn: r.ReadyIn, Err: r.Err}
	switch {
	case errors.Is(r.Err, ErrUnchanged):
		res.Unchanged, res.Err = true, nil
	case errors.Is(r.Err, ErrStopped):
		res.Stopped = true
	}
	if res.Err != nil {
		res.Error = res.Err.Error()
	}
	return res
}

// RestartProgram hands program name over to a new generation with its
// current config: a zero-downtime restart. It returns when the new
// generation is ready or was rolled back (ErrRolledBack), or when ctx
// ends (the handover goes on).
func (s *Supervisor) RestartProgram(ctx context.Context, name string) (control.Result, error) {
	p, err := s.lookup(name)
	if err != nil {
		return control.Result{Program: name}, err
	}
	req := &request{reason: "restart requested", force: true}
	r := resultOf(name, p.ask(ctx, req, evRequest{req}))
	return r, r.Err
}

// StartProgram starts program name after StopProgram, or after its
// restart policy left it down, and returns when it is ready or failed to
// start (ErrStartFailed). A program that runs, or starts already, is left
// as it is: StartProgram returns its outcome. ErrStillStopping: its
// generations are still exiting after a stop.
func (s *Supervisor) StartProgram(ctx context.Context, name string) (control.Result, error) {
	p, err := s.lookup(name)
	if err != nil {
		return control.Result{Program: name}, err
	}
	req := &request{reason: "start requested", force: true}
	r := resultOf(name, p.ask(ctx, req, evStart{req}))
	return r, r.Err
}

// StopProgram stops every generation of program name and returns once
// they all exited, or when ctx ends (the stop goes on). The program keeps
// its sockets (clients wait in the accept queue) and its config;
// StartProgram starts it again.
func (s *Supervisor) StopProgram(ctx context.Context, name string) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	reply := make(chan error, 1)
	select {
	case p.events <- evStop{reply}:
	case <-p.quit:
		return ErrStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PromoteProgram ends program name's bake as passed: the new generation
// takes over at once and the old one drains. ErrNotBaking when it is not
// baking.
func (s *Supervisor) PromoteProgram(ctx context.Context, name string) (control.Result, error) {
	return s.verdict(ctx, name, true)
}

// RevertProgram ends program name's bake as failed: the new generation
// drains and the old one serves on. ErrNotBaking when it is not baking.
func (s *Supervisor) RevertProgram(ctx context.Context, name string) (control.Result, error) {
	return s.verdict(ctx, name, false)
}

func (s *Supervisor) verdict(ctx context.Context, name string, pass bool) (control.Result, error) {
	p, err := s.lookup(name)
	if err != nil {
		return control.Result{Program: name}, err
	}
	reply := make(chan error, 1)
	select {
	case p.events <- evVerdict{pass: pass, reply: reply}:
	case <-p.quit:
		return control.Result{Program: name}, ErrStopping
	case <-ctx.Done():
		return control.Result{Program: name}, ctx.Err()
	}
	select {
	case err = <-reply:
	case <-ctx.Done():
		err = ctx.Err()
	}
	res := control.Result{Program: name, Generation: p.statusNow().Generation, Err: err}
	if err != nil {
		res.Error = err.Error()
	}
	return res, err
}

// RollbackProgram hands program name over to the binary of the
// generation that served before the current one, kept by baton under
// .baton/bin even when the file on disk was replaced since, with the
// program's current config. It returns like RestartProgram.
func (s *Supervisor) RollbackProgram(ctx context.Context, name string) (control.Result, error) {
	p, err := s.lookup(name)
	if err != nil {
		return control.Result{Program: name}, err
	}
	req := &request{reason: "rollback requested"}
	r := resultOf(name, p.ask(ctx, req, evRollback{req}))
	return r, r.Err
}

// ProgramLogs returns up to n of program name's last output lines (all
// kept when n <= 0).
func (s *Supervisor) ProgramLogs(name string, n int) ([]LogLine, error) {
	p, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	return p.ring.last(n), nil
}

// FollowProgram returns program name's last n output lines (with after
// > 0: those after line number after, as many as are kept) and a channel
// of the lines that follow; stop ends it and reports how many lines a
// slow reader lost.
func (s *Supervisor) FollowProgram(name string, n int, after uint64) (backlog []LogLine, lines <-chan LogLine, stop func() int, err error) {
	p, err := s.lookup(name)
	if err != nil {
		return nil, nil, nil, err
	}
	backlog, lines, stop = p.ring.follow(n, after)
	return backlog, lines, stop, nil
}

// Addr returns the bound address of a program's listener ("host:port",
// with the port of ":0" resolved, or "unix:/path"), or "" when there is
// no such listener.
func (s *Supervisor) Addr(program, listener string) string {
	p, err := s.lookup(program)
	if err != nil {
		return ""
	}
	for _, l := range p.statusNow().Listeners {
		if l.Name == listener {
			return l.Address
		}
	}
	return ""
}
