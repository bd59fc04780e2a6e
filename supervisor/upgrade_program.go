package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"github.com/baton-run/baton/internal/pause"
	"github.com/baton-run/baton/internal/reaper"
	"github.com/baton-run/baton/supervisor/config"
)

// How a program goes through an upgrade of baton in place, which
// upgrade.go drives:
//
//  1. evFreeze: from now on the program's requests end with ErrUpgrading.
//     It waits until no generation starts and none bakes (a handover
//     under way ends first), then parks every reader of its generations —
//     output pumps, notify reader, handoff peers — between two reads, and
//     answers. Frozen, it answers status and takes kept binaries; every
//     other event (a timer, an exit) waits in deferred. An exit stays a
//     zombie: reaping is the program's (evZombie), so nothing is lost.
//  2. evSnapshot: it describes itself and passes its descriptors.
//  3. The exec. The new image goes on from the description
//     (restoreProgram). When the exec failed, evThaw resumes the readers
//     and handles what was deferred, in order.

type upgradeStage int

const (
	stageQuieting upgradeStage = iota // waiting until no generation starts or bakes
	stagePausing                      // its readers are parking
	stageFrozen
)

// programUpgrade is a program's part in an upgrade, owned by run.
type programUpgrade struct {
	stage    upgradeStage
	reply    chan error      // answered once: nil when frozen, or why it cannot be
	pausers  []*pause.Reader // of its generations' pumps and notify readers
	resume   func()          // resumes the router's peers; nil until they parked
	deferred []event
}

// The events of an upgrade.
type (
	evFreeze   struct{ reply chan error } // buffered
	evPaused   struct{ resume func() }    // the readers parked
	evSnapshot struct {
		pass    *fdPass
		sources *sourceTable
		reply   chan snapshotResult
	}
	evThaw struct{} // the upgrade did not happen
)

type snapshotResult struct {
	st  programState
	err error
}

// ErrUpgrading: a request came while baton upgrades itself in place.
var ErrUpgrading = errors.New("supervisor: baton is upgrading itself; try again in a moment")

// duringUpgrade handles ev when the upgrade has a say in it, and reports
// whether it did.
func (p *program) duringUpgrade(ev event) bool {
	u := p.upgrade
	switch ev := ev.(type) {
	case evFreeze:
		p.onFreeze(ev.reply)
		return true
	case evThaw:
		if u != nil {
			p.thaw()
		}
		return true
	case evPaused:
		if u == nil || u.stage != stagePausing {
			ev.resume() // the upgrade was called off meanwhile
			return true
		}
		u.resume, u.stage = ev.resume, stageFrozen
		u.reply <- nil
		return true
	case evSnapshot:
		if u == nil || u.stage != stageFrozen {
			ev.reply <- snapshotResult{err: fmt.Errorf("program %s is not frozen", p.name)}
			return true
		}
		st, err := p.snapshot(ev.pass, ev.sources)
		ev.reply <- snapshotResult{st, err}
		return true
	}
	if u == nil {
		return false
	}
	switch ev := ev.(type) {
	case evRequest:
		p.end(ev.req, p.serving(ErrUpgrading))
		return true
	case evStart:
		p.end(ev.req, p.serving(ErrUpgrading))
		return true
	case evRollback:
		p.end(ev.req, p.serving(ErrUpgrading))
		return true
	case evStop:
		ev.reply <- ErrUpgrading
		return true
	case evVerdict:
		ev.reply <- ErrUpgrading
		return true
	case evStatus, evKept:
		return false
	case evNotify:
		return u.stage == stageFrozen && p.deferEvent(ev)
	}
	return u.stage != stageQuieting && p.deferEvent(ev)
}

func (p *program) deferEvent(ev event) bool {
	p.upgrade.deferred = append(p.upgrade.deferred, ev)
	return true
}

// onFreeze begins the program's part in an upgrade. A one-shot that runs
// is waited for like a handover.
func (p *program) onFreeze(reply chan error) {
	switch {
	case p.upgrade != nil:
		reply <- fmt.Errorf("program %s: an upgrade is under way already", p.name)
		return
	case p.phase == phaseShutdown:
		reply <- fmt.Errorf("program %s: %w", p.name, ErrStopping)
		return
	case p.phase == phaseBuilding:
		reply <- fmt.Errorf("program %s waits for its first build; baton dev does not upgrade in place", p.name)
		return
	}
	p.upgrade = &programUpgrade{reply: reply}
	switch {
	case p.attempt != nil && p.attempt.gen.cfg.Type == config.TypeOneshot:
		p.log.Info("upgrade: waiting for the one-shot run under way", "gen", p.attempt.gen.n)
	case p.attempt != nil:
		p.log.Info("upgrade: waiting for the handover under way", "gen", p.attempt.gen.n)
	}
	p.freezeWhenQuiet()
}

// freezeWhenQuiet parks the readers once no generation starts; it runs
// after each event while the program takes part in an upgrade.
func (p *program) freezeWhenQuiet() {
	u := p.upgrade
	if u.stage != stageQuieting || p.attempt != nil || p.queued != nil {
		return
	}
	if p.phase == phaseShutdown {
		p.upgrade = nil
		u.reply <- fmt.Errorf("program %s: %w", p.name, ErrStopping)
		return
	}
	if b := p.baking; b != nil {
		p.upgrade = nil
		u.reply <- fmt.Errorf("program %s is baking gen %d (%v left): promote or revert it, or wait for its verdict, then upgrade", p.name, b.gen.n, b.cfg.Duration-b.elapsed)
		return
	}
	u.stage = stagePausing
	var parked []<-chan struct{}
	for _, g := range p.gens {
		for _, pp := range g.pumps {
			if pp != nil {
				u.pausers = append(u.pausers, pp.pause)
				parked = append(parked, pp.pause.Pause())
			}
		}
		if g.notify != nil {
			u.pausers = append(u.pausers, g.notify.pause)
			parked = append(parked, g.notify.pause.Pause())
		}
	}
	router := p.handoff
	go func() {
		for _, c := range parked {
			<-c
		}
		resume := router.Pause()
		select {
		case p.events <- evPaused{resume}:
		case <-p.quit:
			resume()
		}
	}()
}

// thaw ends the program's part in an upgrade that did not happen.
func (p *program) thaw() {
	u := p.upgrade
	p.upgrade = nil
	if u.stage == stageQuieting {
		select {
		case u.reply <- ErrUpgrading: // nobody may wait for it any more
		default:
		}
	}
	for _, r := range u.pausers {
		r.Resume()
	}
	if u.resume != nil {
		u.resume()
	}
	for _, ev := range u.deferred {
		p.handle(ev)
	}
}

// sourceTable numbers the config sources the programs' configs come
// from, for the state.
type sourceTable struct {
	list  []*config.Source
	index map[*config.Source]int
}

func newSourceTable() *sourceTable { return &sourceTable{index: map[*config.Source]int{}} }

func (t *sourceTable) ref(c *config.Program) (cfgRef, error) {
	src := c.Source()
	if src == nil {
		return cfgRef{}, fmt.Errorf("the config of program %s was not read from a file", c.Name)
	}
	return cfgRef{Source: t.add(src), Name: c.Name, Binary: c.Command[0]}, nil
}

// snapshot describes the frozen program for the new image.
func (p *program) snapshot(pass *fdPass, sources *sourceTable) (programState, error) {
	st := programState{
		Name: p.name, Phase: p.phase.String(), Sockets: p.lease.keys(), NextGen: p.nextGen, LastKey: p.lastKey,
		Bad: p.bad, Failures: p.restarts.failures, ExitReason: p.exitReason, WaitReason: p.waitReason, Stats: p.stats, Logs: p.ring.last(0),
	}
	var err error
	if st.Config, err = sources.ref(p.cfg); err != nil {
		return st, err
	}
	for _, k := range p.kept {
		st.Kept = append(st.Kept, keptState{Gen: k.gen, Path: k.path})
	}
	if p.phase == phaseBackoff {
		d := time.Until(p.restartAt)
		st.RestartIn = &d
	}
	if p.current != nil {
		st.Current = p.current.n
	}
	for _, g := range p.gens {
		gs, err := g.snapshot(pass, sources)
		if err != nil {
			return st, fmt.Errorf("gen %d: %w", g.n, err)
		}
		st.Gens = append(st.Gens, gs)
	}
	sort.Slice(st.Gens, func(i, j int) bool { return st.Gens[i].N < st.Gens[j].N })
	return st, nil
}

// snapshot describes a generation whose readers parked.
func (g *generation) snapshot(pass *fdPass, sources *sourceTable) (genState, error) {
	gs := genState{
		N: g.n, Key: g.key, PID: g.pid, UID: g.uid, Started: g.started, Sockets: g.lease.keys(), Tail: g.out.all(),
		Ready: g.ready, ReadyAt: g.readyAt, StopAt: g.stopAt, Killed: g.killed, Status: g.status, Stats: g.stats, ByHandover: g.byHandover,
		ProbeFailures: g.probeFailures, RSS: g.rss, ReplacedBy: g.replacedBy, Hung: g.hung, QuitSent: g.quitSent,
	}
	var err error
	if gs.Config, err = sources.ref(g.cfg); err != nil {
		return gs, err
	}
	if g.deadline.id != 0 {
		d := time.Until(g.deadline.at)
		gs.DeadlineIn, gs.During = &d, "start"
		if !g.stopAt.IsZero() {
			gs.During = "stop"
		}
	}
	for i, pp := range g.pumps {
		gs.Output[i].FD = -1
		if pp == nil {
			continue
		}
		select {
		case <-pp.done: // the pipe reached EOF: nothing more comes
			continue
		default:
		}
		if gs.Output[i].FD, err = pass.conn(pp.f); err != nil {
			return gs, fmt.Errorf("output pipe: %w", err)
		}
		gs.Output[i].Partial = pp.partial
	}
	if n := g.notify; n != nil {
		fd, err := pass.conn(n.conn)
		if err != nil {
			return gs, fmt.Errorf("notify socket: %w", err)
		}
		gs.Notify = &notifyState{FD: fd, Path: n.path, Ino: n.ino}
	}
	if h := g.handoff; h != nil {
		select {
		case <-h.Done(): // its processes closed their end: nothing more comes
		default:
			fd, err := pass.conn(h.Conn())
			if err != nil {
				return gs, fmt.Errorf("handoff socket: %w", err)
			}
			gs.Handoff = &handoffState{FD: fd, PeerState: h.State()}
		}
	}
	return gs, nil
}

// cfgResolver parses each source of the state once, with this build's
// defaults, and finds the configs the state names.
type cfgResolver struct {
	sources []*config.Source
	files   []*config.File
}

func (r *cfgResolver) get(ref cfgRef) (*config.Program, error) {
	if ref.Source < 0 || ref.Source >= len(r.sources) {
		return nil, fmt.Errorf("config source %d not passed", ref.Source)
	}
	if r.files == nil {
		r.files = make([]*config.File, len(r.sources))
	}
	f := r.files[ref.Source]
	if f == nil {
		var err error
		if f, err = r.sources[ref.Source].Parse(); err != nil {
			return nil, err
		}
		r.files[ref.Source] = f
	}
	pc := f.Program(ref.Name)
	if pc == nil {
		return nil, fmt.Errorf("program %q is not in its config %s any more", ref.Name, r.sources[ref.Source].Path)
	}
	if ref.Binary != "" && ref.Binary != pc.Command[0] {
		pc = pc.WithBinary(ref.Binary)
	}
	return pc, nil
}

// restoreProgram goes on with a program of the image before this one:
// its state, its generations (still running, this process's children),
// and their readers, which start where the old image's parked.
func (s *Supervisor) restoreProgram(ps programState, cfgs *cfgResolver) (*program, error) {
	cfg, err := cfgs.get(ps.Config)
	if err != nil {
		return nil, err
	}
	l, err := s.pool.leaseKeys(ps.Sockets)
	if err != nil {
		return nil, err
	}
	p := newProgram(s.env, cfg, l, false)
	ph, ok := phaseNamed(ps.Phase)
	if !ok {
		return nil, fmt.Errorf("unknown state %q", ps.Phase)
	}
	p.phase, p.nextGen, p.lastKey, p.exitReason, p.waitReason, p.stats = ph, ps.NextGen, ps.LastKey, ps.ExitReason, ps.WaitReason, ps.Stats
	p.restarts.failures = ps.Failures
	if ps.Bad != nil {
		p.bad = ps.Bad
	}
	for _, k := range ps.Kept {
		p.kept = append(p.kept, keptBinary{gen: k.Gen, path: k.Path})
	}
	for _, l := range ps.Logs {
		p.ring.add(l)
	}
	// The serving generation first: the readers of the others may pass
	// it idle connections at once.
	sort.SliceStable(ps.Gens, func(i, j int) bool { return ps.Gens[i].N == ps.Current && ps.Gens[j].N != ps.Current })
	for _, gs := range ps.Gens {
		g, err := s.adoptGeneration(p, gs, cfgs)
		if err != nil {
			return nil, fmt.Errorf("gen %d: %w", gs.N, err)
		}
		p.gens[g.n] = g
		if g.n == ps.Current {
			p.setCurrent(g)
			p.startMonitor(g) // its watchdog starts a full period again
		}
	}
	if ps.Current != 0 && p.current == nil {
		return nil, fmt.Errorf("the serving gen %d was not passed", ps.Current)
	}
	// The programs that start after this one hear where it stands.
	p.reportDep()
	if ps.RestartIn != nil && p.phase == phaseBackoff {
		d := max(*ps.RestartIn, 0)
		p.restartAt = time.Now().Add(d)
		p.restartT = p.armTimer(d, func(id uint64) event { return evRestart{id} })
	}
	return p, nil
}

// adoptGeneration goes on with a generation of the image before this
// one: it is this process's child, its descriptors were passed, and its
// readers start again. It is reaped by pid (no exec.Cmd started it here).
func (s *Supervisor) adoptGeneration(p *program, gs genState, cfgs *cfgResolver) (*generation, error) {
	cfg, err := cfgs.get(gs.Config)
	if err != nil {
		return nil, err
	}
	l, err := s.pool.leaseKeys(gs.Sockets)
	if err != nil {
		return nil, err
	}
	g := &generation{n: gs.N, cfg: cfg, key: gs.Key, pid: gs.PID, uid: gs.UID, started: gs.Started, lease: l, done: make(chan struct{}),
		ready: gs.Ready, readyAt: gs.ReadyAt, stopAt: gs.StopAt, killed: gs.Killed, status: gs.Status, stats: gs.Stats, byHandover: gs.ByHandover,
		probeFailures: gs.ProbeFailures, rss: gs.RSS, replacedBy: gs.ReplacedBy, hung: gs.Hung, quitSent: gs.QuitSent}
	g.log = s.outLog.Named(p.name).With("gen", g.n, "pid", g.pid)
	for _, line := range gs.Tail {
		g.out.add(line)
	}
	for i, o := range gs.Output {
		var f *os.File
		if o.FD >= 0 {
			f = os.NewFile(uintptr(o.FD), "output")
		} else {
			// Its pipe had ended: a pump at EOF at once.
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			w.Close()
			f = r
		}
		g.pumps[i] = newPump(f, o.Partial)
	}
	if n := gs.Notify; n != nil {
		c, err := fileConn(n.FD)
		if err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		g.notify = &notifySocket{path: n.Path, ino: n.Ino, conn: c, pause: pause.New(c.SetReadDeadline)}
	}
	if h := gs.Handoff; h != nil {
		c, err := fileConn(h.FD)
		if err != nil {
			return nil, fmt.Errorf("handoff socket: %w", err)
		}
		g.handoff = p.handoff.Adopt(c, h.PeerState)
	}
	// Its own child now: the orphan reaper leaves it alone.
	reaper.Adopt(g.pid)
	g.wait = func() processStatus {
		st := waitPID(g.pid)
		reaper.Forget(g.pid)
		return st
	}
	if gs.DeadlineIn != nil {
		during := gs.During
		g.deadline = p.armTimer(max(*gs.DeadlineIn, 0), func(id uint64) event { return evDeadline{g: g, id: id, during: during} })
	}
	g.watch(p.post, p.output, p.log)
	return g, nil
}

// fileConn makes a unix socket of a passed descriptor.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	if f == nil {
		return nil, fmt.Errorf("descriptor %d not passed", fd)
	}
	c, err := net.FileConn(f) // a dup, registered with Go's poller
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor %d is not a unix socket", fd)
	}
	return uc, nil
}

// phaseNamed is the phase status reports as name.
func phaseNamed(name string) (phase, bool) {
	for ph, n := range states {
		if n == name {
			return ph, true
		}
	}
	return 0, false
}
