package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
	"github.com/hashicorp/go-hclog"
)

// ReloadRequest says what Reload does.
type ReloadRequest struct {
	// Programs restricts the reload to these programs, which must be in
	// the new config; none means every program, and programs added to or
	// removed from the file are started or stopped.
	Programs []string
	// Reason is logged with each handover ("SIGHUP", "baton reload").
	Reason string
	// Force hands over every program concerned, changed or not, and
	// retries binaries that already failed to start (SIGHUP, baton
	// reload). Otherwise only programs whose config changed are handed
	// over (a saved config file).
	Force bool
}

// reloadOp is a reload on its way: from Reload to the config reader, which
// reads the file, then to the loop, which applies it and answers.
type reloadOp struct {
	req     ReloadRequest
	reply   chan reloadStarted // buffered: nobody may be waiting
	trigger time.Time          // when it was asked for
	read    time.Time          // when the config was read and its sockets opened
}

// reloadStarted is the loop's answer to a reload: the handovers it
// started and the programs it stops, to wait for.
type reloadStarted struct {
	err     error
	jobs    []reloadJob
	removed []*program
}

type reloadJob struct {
	program string
	reply   chan handoverResult
}

// Reload re-reads the config file and applies it, as req says: programs
// added are started, programs removed are stopped, and the others are
// handed over to a new generation with their new config when it changed
// (or always, with Force).
//
// It is all or nothing: when the file does not validate or a new listener
// cannot be opened, nothing changes and the error says why (a
// *config.Error for the file). Reload returns when every handover has
// ended and every removed program has stopped, or when ctx ends (the
// reload goes on), with one Result per program handed over; its error
// joins the failed handovers. Reloads are applied one at a time, in the
// order they were asked for.
func (s *Supervisor) Reload(ctx context.Context, req ReloadRequest) ([]control.Result, error) {
	if req.Force && len(req.Programs) == 0 {
		s.systemd.reloading()
		defer s.systemd.reloaded()
	}
	op := &reloadOp{req: req, reply: make(chan reloadStarted, 1), trigger: time.Now()}
	select {
	case s.loads <- op:
	case <-s.loopDone:
		return nil, ErrStopping
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var st reloadStarted
	select {
	case st = <-op.reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if st.err != nil {
		return nil, st.err
	}
	for _, p := range st.removed {
		select {
		case <-p.quit:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	results := make([]control.Result, 0, len(st.jobs))
	var errs []error
	for _, j := range st.jobs {
		var r handoverResult
		select {
		case r = <-j.reply:
		case <-ctx.Done():
			return results, ctx.Err()
		}
		res := resultOf(j.program, r)
		if res.Stopped {
			// Not a failure of the reload: a stopped program takes its
			// new config when it starts.
			res.Err, res.Error = nil, ""
		}
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res.Program, res.Err))
		}
		results = append(results, res)
	}
	return results, errors.Join(errs...)
}

// reloadLater asks for a reload whose outcome nobody waits for (a saved
// config file). It waits only for the config reader to take it.
func (s *Supervisor) reloadLater(req ReloadRequest) {
	select {
	case s.loads <- &reloadOp{req: req, reply: make(chan reloadStarted, 1), trigger: time.Now()}:
	case <-s.loopDone:
	}
}

// reader is the config reader: it reads, parses and validates the config
// file for each reload, opens the sockets of the new config, and passes
// the result to the loop, one reload at a time and in order, so that the
// last config read is the last applied.
func (s *Supervisor) reader() {
	for {
		select {
		case op := <-s.loads:
			s.read(op)
		case <-s.loopDone:
			return
		}
	}
}

func (s *Supervisor) read(op *reloadOp) {
	fail := func(err error) {
		s.log.Error("config not applied; every program keeps running as it was", "reason", op.req.Reason, "error", err)
		op.reply <- reloadStarted{err: err}
	}
	file, diags := config.Load(s.cfg.File)
	if diags.HasErrors() {
		s.log.Error("config not applied; every program keeps running as it was", "reason", op.req.Reason)
		for _, d := range diags {
			s.log.Error(config.FormatDiagnostic(d))
		}
		op.reply <- reloadStarted{err: &config.Error{Diags: diags}}
		return
	}
	for _, d := range diags {
		s.log.Warn(config.FormatDiagnostic(d))
	}
	for _, n := range op.req.Programs {
		if file.Program(n) == nil {
			fail(fmt.Errorf("%w: %q is not in %s", ErrNoProgram, n, s.cfg.File))
			return
		}
	}
	// Every socket first: a listener that cannot be opened fails the
	// whole reload before anything changed.
	leases := map[string]*lease{}
	release := func() {
		for _, l := range leases {
			l.release()
		}
	}
	for _, p := range file.Programs {
		if len(op.req.Programs) > 0 && !slices.Contains(op.req.Programs, p.Name) {
			continue
		}
		l, err := s.pool.acquire(p.Name, p.Listeners)
		if err != nil {
			release()
			fail(fmt.Errorf("program %q: %w", p.Name, err))
			return
		}
		leases[p.Name] = l
	}
	op.read = time.Now()
	if !s.post(msgApply{op: op, file: file, leases: leases}) {
		release()
		op.reply <- reloadStarted{err: ErrStopping}
	}
}

// apply applies a config the reader read: it runs in the loop and only
// dispatches (programs are started, told to stop, or asked for a
// handover); the outcomes reach the Reload caller directly.
func (s *Supervisor) apply(m msgApply) {
	op := m.op
	if s.holdForUpgrade(m) {
		return
	}
	if s.stopping {
		for _, l := range m.leases {
			l.release()
		}
		op.reply <- reloadStarted{err: ErrStopping}
		return
	}
	pl := planReload(s.file, m.file, op.req.Programs)
	var st reloadStarted
	for _, name := range pl.removed {
		p := s.programs[name]
		delete(s.programs, name)
		s.stopBuilder(name)
		s.log.Info("program removed: stopping it", "program", name)
		p.post(evShutdown{})
		st.removed = append(st.removed, p)
	}
	for _, name := range pl.added {
		pc := m.file.Program(name)
		p := newProgram(s.env, pc, m.leases[name], s.dev(pc))
		s.programs[name] = p
		s.log.Info("program added", "program", name)
		s.startProgram(p)
		if s.dev(pc) {
			s.startBuilder(p, pc)
		}
	}
	for _, name := range append(pl.changed, pl.unchanged...) {
		pc, p, l := m.file.Program(name), s.programs[name], m.leases[name]
		changed := slices.Contains(pl.changed, name)
		var run *config.Program
		switch b := s.builders[name]; {
		case !s.dev(pc):
			if b != nil {
				// The build block went: run the binary it names.
				s.stopBuilder(name)
				changed = true
			}
			run = pc
		case b == nil:
			// A build block came: its first good build hands over.
			s.startBuilder(p, pc)
		default:
			b.setBase(pc) // a changed build block rebuilds
			run = b.runConfig()
		}
		if run == nil || (!op.req.Force && !changed) {
			// Nothing built yet (the first good build starts it), or
			// nothing to do.
			l.release()
			continue
		}
		reply := make(chan handoverResult, 1)
		p.post(evRequest{&request{reason: op.req.Reason, force: op.req.Force, cfg: run, lease: l, replies: []chan handoverResult{reply},
			trigger: op.trigger, read: op.read, built: s.builders[name] != nil && s.dev(pc)}})
		st.jobs = append(st.jobs, reloadJob{program: name, reply: reply})
	}

	file := pl.file
	if file.Control != s.file.Control {
		s.log.Warn("the control block changed; restart baton to apply it", "socket", s.file.Control.Socket)
	}
	if file.Metrics != s.file.Metrics {
		s.log.Warn("the metrics block changed; restart baton to apply it", "address", s.file.Metrics.Address)
	}
	if file.Health != s.file.Health {
		s.log.Warn("the health block changed; restart baton to apply it", "address", s.file.Health.Address)
	}
	file.Control, file.Metrics, file.Health = s.file.Control, s.file.Metrics, s.file.Health
	if s.ownLogger && file.Log.Level != s.file.Log.Level {
		s.log.SetLevel(s.ownLevel(file))
		s.outLog.SetLevel(hclog.LevelFromString(file.Log.Level))
	}
	s.file = file
	s.watcher.Set(s.watchTargets())
	s.systemd.expect(s.order())
	op.reply <- st
}

// stopBuilder stops program name's builder, if it has one; the builder
// removes the binaries it wrote when it ends.
func (s *Supervisor) stopBuilder(name string) {
	if b := s.builders[name]; b != nil {
		b.stop()
		delete(s.builders, name)
	}
}
