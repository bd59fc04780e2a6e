package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
	"github.com/hashicorp/go-hclog"
)

// Errors a program's requests end with. Each says what happened to the
// program, and so what to do.
var (
	// ErrRolledBack: the new generation exited or missed its ready
	// timeout; the serving generation keeps serving.
	ErrRolledBack = errors.New("supervisor: rolled back")
	// ErrStartFailed: a generation exited or missed its ready timeout
	// while none served; the restart policy takes over.
	ErrStartFailed = errors.New("supervisor: start failed")
	// ErrUnchanged: a watcher saw content that already serves.
	ErrUnchanged = errors.New("supervisor: unchanged")
	// ErrKnownBad: a watcher saw content that already failed to start.
	ErrKnownBad = errors.New("supervisor: this binary and config already failed to start")
	// ErrStopping: baton is stopping, or the program left the config.
	ErrStopping = errors.New("supervisor: program is shutting down")
	// ErrStopped: the program was stopped on request; start it first.
	ErrStopped = errors.New("supervisor: program is stopped; start it first")
	// ErrStillStopping: Start came while the program's generations were
	// still exiting after a stop.
	ErrStillStopping = errors.New("supervisor: program is still stopping; try again once it stopped")
)

// program runs one program block. A single goroutine, run, owns
// everything below "owned by run"; everything else talks to it with
// events (see the ev… types), and requests carry their reply channels.
//
// Its life is a phase (phase.go), changed only by enter. The handlers
// below are grouped by what they react to: requests (a handover, a start,
// a stop), then what generations do (ready, exit, deadlines).
type program struct {
	name   string
	env    *programEnv
	log    hclog.Logger // baton's events about this program
	outLog hclog.Logger // the program's own output
	ring   *ring        // its last output lines
	logErr sync.Once
	events chan event
	quit   chan struct{} // closed when run returns

	// Owned by run.
	phase      phase
	cfg        *config.Program     // the config the next generation starts with
	lease      *lease              // cfg's sockets
	gens       map[int]*generation // every generation not reaped yet
	current    *generation         // the serving one; set in phaseRunning only
	attempt    *attempt            // a generation starting for a request
	queued     *request            // requests that came during an attempt, merged
	restarts   restartTracker      // the restart policy's state
	restartT   timer               // armed in phaseBackoff only
	restartAt  time.Time           // when restartT fires
	exitReason string              // phaseExited: why it stays down
	baking     *bake               // phaseBaking: the new generation judged
	waitReason string              // phaseWaiting: what it waits for
	depSeq     uint64              // numbers its depChanged reports
	kept       []keptBinary        // binaries of generations that served, newest last: for rollback
	dev        bool                // built by baton dev, which ignores bake
	stopped    []chan error        // Stop callers, told when phaseStopped begins
	bad        map[string]string   // generation keys that failed to start → why
	lastKey    string              // the key of the last generation started
	nextGen    int
	timerSeq   uint64
	stats      programStats
	handoff    *handoff.Router // carries idle connections to current
	upgrade    *programUpgrade // while baton upgrades itself (upgrade_program.go)
	// killedInShutdown: a generation had to be killed while baton
	// stopped, which Run reports as ErrKilled.
	killedInShutdown bool
}

// attempt is a generation starting for a request: a first start, a
// restart, or a handover while another generation serves.
type attempt struct {
	gen *generation
	req *request
}

// request asks for a new generation, and ends with a handoverResult sent
// to every reply channel.
type request struct {
	reason string
	// trigger is when the request began (a signal, a saved file, a
	// command), read when the config it carries was read: the first
	// phases of the handover's breakdown. Zero means now.
	trigger, read time.Time
	// force starts a generation even when its binary and config already
	// serve or already failed to start (SIGHUP, reload, restart, start).
	force bool
	cfg   *config.Program // the config to start with; nil: the program's
	lease *lease          // cfg's sockets; released when the request ends
	// built: cfg runs the binary of the last good build (baton dev); the
	// binary of the generation serving when the request begins wins, as
	// the builder may not have heard of that generation's handover yet.
	built   bool
	replies []chan handoverResult
}

// handoverResult is the outcome of a request.
type handoverResult struct {
	Gen     int           // the generation that serves now (0 if none)
	Binary  string        // its binary
	ReadyIn time.Duration // how long the new generation took to be ready
	Err     error         // ErrRolledBack, ErrStartFailed, ErrUnchanged, …
}

// programStats are a program's counters and last events.
type programStats struct {
	Restarts  int // restarts after the serving generation exited on its own
	Handovers int // completed handovers
	Rollbacks int // new generations that failed while another served
	Reverts   int // new generations that failed their bake
	// LivenessFailures and MemoryReplacements count serving generations
	// replaced because they hung or grew past the memory limit.
	LivenessFailures   int
	MemoryReplacements int
	LastLiveness       string              // the last liveness result
	LastExit           *control.ExitRecord // the last generation that exited
	LastError          string              // the last failed start or handover
	LastBake           *control.BakeStatus // the last bake that ended
}

// keptBinary is a copy (or link) of the binary a generation served with,
// kept for rollback.
type keptBinary struct {
	gen  int
	path string
}

// timer is a loop timer: when it fires it posts an event carrying its
// id, and a fire whose id is not the one armed now (the timer was stopped
// or replaced meanwhile) is ignored.
type timer struct {
	id   uint64
	at   time.Time // when it fires: an upgrade arms it again in the new image
	stop func() bool
}

func (t *timer) cancel() {
	if t.stop != nil {
		t.stop()
	}
	*t = timer{}
}

// The events of a program's goroutine.
type (
	event      interface{}
	evRequest  struct{ req *request }
	evStart    struct{ req *request }
	evStop     struct{ reply chan error }
	evShutdown struct{}
	evKill     struct{}
	evReady    struct{ g *generation }
	evNotify   struct {
		g   *generation
		msg protocol.Message
	}
	evDeadline struct {
		g      *generation
		id     uint64
		during string // "start" or "stop"
	}
	evExit struct {
		g  *generation
		st processStatus
	}
	evZombie    struct{ g *generation } // g exited: its program reaps it (g.wait), then handles the exit
	evRestart   struct{ id uint64 }
	evStatus    struct{ reply chan control.ProgramStatus }
	evBakeTick  struct{ id uint64 }
	evBakeProbe struct {
		g   *generation
		err error
	}
	evVerdict struct { // promote or revert
		pass  bool
		reply chan error
	}
	evKept struct{ kept keptBinary }
	// evRelease: what it waited for is there: start. evWaitFor: what it
	// waits for now.
	evRelease struct{}
	evWaitFor struct{ reason string }
	evProbe   struct { // a liveness probe of the serving generation
		g   *generation
		err error
	}
	evWatchdog struct {
		g  *generation
		id uint64
	}
	evMemory struct {
		g   *generation
		rss int64
	}
	evRollback struct{ req *request }
)

// newProgram returns a program that starts with cfg and its lease when
// run; in baton dev (dev) it waits for its first build (phaseBuilding)
// instead, and ignores bake.
func newProgram(env *programEnv, cfg *config.Program, l *lease, dev bool) *program {
	p := &program{
		name:     cfg.Name,
		env:      env,
		log:      env.log.With("program", cfg.Name),
		outLog:   env.outLog.Named(cfg.Name),
		events:   make(chan event),
		quit:     make(chan struct{}),
		ring:     newRing(),
		phase:    phaseStarting,
		cfg:      cfg,
		lease:    l,
		gens:     map[int]*generation{},
		bad:      map[string]string{},
		restarts: restartTracker{policy: cfg.Restart},
		dev:      dev,
		handoff:  handoff.NewRouter(env.log.With("program", cfg.Name)),
	}
	switch {
	case dev:
		p.phase = phaseBuilding // baton dev starts it with its first build
	case len(cfg.After) > 0:
		p.phase, p.waitReason = phaseWaiting, "waiting for "+strings.Join(cfg.After, ", ")
	}
	return p
}

// run is the program's goroutine: it starts the first generation and
// returns once the program shut down and every generation was reaped.
func (p *program) run() {
	defer close(p.quit)
	if p.phase == phaseStarting {
		p.begin(&request{reason: "start", force: true})
	}
	for p.phase != phaseShutdown || len(p.gens) > 0 {
		p.handle(<-p.events)
	}
	p.lease.release()
	p.log.Info("stopped")
}

func (p *program) handle(ev event) {
	if p.duringUpgrade(ev) {
		return // see upgrade_program.go
	}
	switch ev := ev.(type) {
	case evRequest:
		p.onRequest(ev.req)
	case evStart:
		p.onStart(ev.req)
	case evStop:
		p.onStop(ev.reply)
	case evShutdown:
		p.onShutdown()
	case evKill:
		p.onShutdown()
		for _, g := range p.gens {
			p.kill(g, "immediate stop (SIGQUIT)")
		}
	case evReady:
		p.onReady(ev.g)
	case evNotify:
		p.onNotify(ev.g, ev.msg)
	case evDeadline:
		p.onDeadline(ev)
	case evExit:
		p.onExit(ev.g, ev.st)
	case evZombie:
		p.onExit(ev.g, ev.g.wait())
	case evRestart:
		p.onRestartTimer(ev.id)
	case evStatus:
		ev.reply <- p.status()
	case evBakeTick:
		p.onBakeTick(ev.id)
	case evBakeProbe:
		p.onBakeProbe(ev.g, ev.err)
	case evVerdict:
		p.onVerdict(ev.pass, ev.reply)
	case evKept:
		p.onKept(ev.kept)
	case evRelease:
		if p.phase == phaseWaiting {
			p.waitReason = ""
			p.begin(&request{reason: "start: " + strings.Join(p.cfg.After, ", ") + " ready", force: true})
		}
	case evWaitFor:
		p.waitReason = ev.reason
	case evProbe:
		p.onProbe(ev.g, ev.err)
	case evWatchdog:
		p.onWatchdog(ev.g, ev.id)
	case evMemory:
		p.onMemory(ev.g, ev.rss)
	case evRollback:
		p.onRollback(ev.req)
	}
	if p.upgrade != nil {
		p.freezeWhenQuiet()
	}
}

// enter moves the program to phase next.
func (p *program) enter(next phase) {
	if !p.phase.allows(next) {
		p.log.Error("bug", "error", errIllegalTransition(p.phase, next))
	}
	prev := p.phase
	p.phase = next
	if next != prev {
		p.reportDep()
	}
}

// depState is what a program that starts after this one waits for.
type depState struct {
	seq       uint64 // newer reports of a program replace older ones
	serving   bool   // a generation serves (running, baking)
	completed bool   // a one-shot exited 0
	why       string // otherwise, for the waiting one's status
}

// reportDep tells the loop where the program stands, for the programs
// that start after it.
func (p *program) reportDep() {
	p.depSeq++
	st := depState{seq: p.depSeq, why: p.phase.String()}
	switch {
	case p.phase == phaseRunning || p.phase == phaseBaking:
		st.serving = true
	case p.cfg.Type == config.TypeOneshot && p.phase == phaseExited && p.exitReason == oneshotDone:
		st.completed = true
	case p.phase == phaseExited:
		st.why = "exited: " + p.exitReason
	}
	p.env.depChanged(p.name, st)
}

// oneshotDone is the exit reason of a one-shot that completed.
const oneshotDone = "completed (exit status 0)"

// post delivers ev to the loop, or drops it once the loop has ended.
func (p *program) post(ev event) {
	select {
	case p.events <- ev:
	case <-p.quit:
	}
}

// request asks the loop for a new generation and waits for the outcome.
func (p *program) request(req *request) handoverResult {
	reply := make(chan handoverResult, 1)
	req.replies = append(req.replies, reply)
	select {
	case p.events <- evRequest{req}:
		return <-reply
	case <-p.quit:
		req.lease.release()
		return handoverResult{Err: ErrStopping}
	}
}

// ---- Requests ----

// onRequest: a reload, a watcher, a build or Restart wants a new
// generation.
func (p *program) onRequest(req *request) {
	switch p.phase {
	case phaseShutdown:
		p.end(req, handoverResult{Err: ErrStopping})
	case phaseStopping, phaseStopped:
		// A stopped program takes the new config for its next start.
		p.adopt(req)
		p.end(req, handoverResult{Err: ErrStopped})
	case phaseStarting, phaseRunning:
		if p.attempt != nil {
			p.enqueue(req)
			return
		}
		p.begin(req)
	case phaseBaking:
		// A newer deploy: the generation baking drains, and the new one
		// starts beside the last good one, which serves on.
		p.abandonBake(ErrReverted, "superseded by a newer request ("+req.reason+")")
		p.enter(phaseRunning)
		p.begin(req)
	default: // building, backoff, exited
		p.begin(req)
	}
}

// onStart: an operator starts the program (baton start).
func (p *program) onStart(req *request) {
	switch p.phase {
	case phaseShutdown:
		p.end(req, handoverResult{Err: ErrStopping})
	case phaseStopping:
		p.end(req, handoverResult{Err: ErrStillStopping})
	case phaseStarting:
		// It starts already: the caller waits for that start.
		p.attempt.req.replies = append(p.attempt.req.replies, req.replies...)
		req.replies = nil
		p.end(req, handoverResult{})
	case phaseRunning, phaseBuilding, phaseBaking:
		// Serving, or starting with its first good build.
		p.end(req, p.serving(nil))
	default: // stopped, backoff, exited
		if p.phase == phaseStopped {
			p.log.Info("starting the program on request")
		}
		p.restarts.reset()
		req.force = true
		p.begin(req)
	}
}

// onStop: an operator stops the program (baton stop). Its generations
// stop; its config and sockets stay, so clients wait in the accept queue
// until it starts again.
func (p *program) onStop(reply chan error) {
	switch p.phase {
	case phaseShutdown:
		reply <- ErrStopping
		return
	case phaseStopped:
		reply <- nil
		return
	case phaseStopping:
	default:
		p.log.Info("stopping the program on request; its sockets stay open")
		p.halt(ErrStopped)
		p.enter(phaseStopping)
	}
	p.stopped = append(p.stopped, reply)
	p.checkStopped()
}

// onShutdown: baton stops, or the program left the config.
func (p *program) onShutdown() {
	if p.phase == phaseShutdown {
		return
	}
	p.log.Info("stopping")
	p.halt(ErrStopping)
	p.enter(phaseShutdown)
	for _, c := range p.stopped {
		c <- ErrStopping
	}
	p.stopped = nil
}

// halt ends everything under way and sends every generation its stop
// signal: the restart timer, the attempt and the queued requests (which
// end with err), the serving generation.
func (p *program) halt(err error) {
	p.restartT.cancel()
	if p.baking != nil {
		p.abandonBake(err, "the program stops")
	}
	if a := p.attempt; a != nil {
		p.attempt = nil
		p.end(a.req, handoverResult{Err: err})
	}
	if q := p.queued; q != nil {
		p.queued = nil
		p.end(q, handoverResult{Err: err})
	}
	p.setCurrent(nil)
	for _, g := range p.gens {
		p.stop(g)
	}
}

// checkStopped ends phaseStopping once no generation is left.
func (p *program) checkStopped() {
	if p.phase != phaseStopping || len(p.gens) > 0 {
		return
	}
	p.enter(phaseStopped)
	for _, c := range p.stopped {
		c <- nil
	}
	p.stopped = nil
}

// enqueue merges req into the requests waiting for the attempt under way:
// one more handover follows it, with the newest config.
func (p *program) enqueue(req *request) {
	p.log.Debug("handover requested during a handover: queued", "reason", req.reason)
	q := p.queued
	if q == nil {
		p.queued = req
		return
	}
	q.force = q.force || req.force
	q.reason = req.reason
	if req.cfg != nil {
		q.lease.release()
		q.cfg, q.lease = req.cfg, req.lease.clone()
	}
	q.replies = append(q.replies, req.replies...)
	req.replies = nil
	p.end(req, handoverResult{})
}

// next starts the queued request once no attempt is under way.
func (p *program) next() {
	if q := p.queued; q != nil && p.attempt == nil {
		p.queued = nil
		p.begin(q)
	}
}

// adopt makes req's config the program's.
func (p *program) adopt(req *request) {
	if req.cfg == nil {
		return
	}
	p.lease.release()
	p.cfg, p.lease = req.cfg, req.lease.clone()
	p.restarts.policy = req.cfg.Restart
}

// end answers req and releases what it holds.
func (p *program) end(req *request, res handoverResult) {
	for _, c := range req.replies {
		c <- res
	}
	req.replies = nil
	req.lease.release()
}

// serving is the result that names the serving generation, with err.
func (p *program) serving(err error) handoverResult {
	if g := p.current; g != nil {
		return handoverResult{Gen: g.n, Binary: g.cfg.Command[0], Err: err}
	}
	return handoverResult{Err: err}
}

// begin starts a generation for req, unless req is not forced and its
// binary and config already serve, or already failed.
func (p *program) begin(req *request) {
	cfg, l := p.cfg, p.lease
	if req.cfg != nil {
		cfg, l = req.cfg, req.lease
	}
	if req.built && p.current != nil && len(p.current.cfg.Command) > 0 {
		cfg = cfg.WithBinary(p.current.cfg.Command[0])
	}
	path, key, err := p.env.resolve(cfg)
	if err == nil && !req.force {
		if err := p.skip(req, key); err != nil {
			p.end(req, p.serving(err))
			return
		}
	}
	checked := time.Now()
	p.restartT.cancel()
	p.exitReason = ""
	p.nextGen++
	n := p.nextGen
	if err != nil {
		p.failStart(req, n, fmt.Sprintf("cannot start: %v", err), "")
		return
	}
	p.lastKey = key
	g, err := p.env.start(spawnSpec{
		program: p.name, n: n, cfg: cfg, path: path, key: key, lease: l.clone(),
		post: p.post, output: p.output, log: p.log, statsEvery: p.statsEvery(cfg), handoff: p.handoff,
	})
	if err != nil {
		p.failStart(req, n, fmt.Sprintf("cannot start: %v", err), "")
		return
	}
	g.times = startTimes{trigger: req.trigger, read: req.read, checked: checked, spawned: time.Now()}
	if g.times.trigger.IsZero() {
		g.times.trigger = checked
	}
	if g.times.read.IsZero() {
		g.times.read = g.times.trigger
	}
	p.gens[n] = g
	p.attempt = &attempt{gen: g, req: req}
	if p.current != nil {
		p.enter(phaseRunning)
	} else {
		p.enter(phaseStarting)
	}
	args := []any{"gen", n, "pid", g.pid, "reason", req.reason, "command", strings.Join(cfg.Command, " ")}
	if g.via != "" {
		args = append(args, "via", g.via)
	}
	p.log.Info("starting", args...)
	if cfg.Type == config.TypeOneshot {
		return // it runs to completion: its exit is its outcome
	}
	g.deadline = p.armTimer(cfg.Ready.Timeout, func(id uint64) event { return evDeadline{g: g, id: id, during: "start"} })
}

// skip returns why a request that is not forced does not start its
// generation: what it would run already serves (or is the last that was
// tried, when none serves), or already failed to start.
func (p *program) skip(req *request, key string) error {
	if (p.current != nil && p.current.key == key) || (p.current == nil && p.lastKey == key) {
		p.log.Info("change ignored: this binary and config already serve", "reason", req.reason)
		return ErrUnchanged
	}
	if why, bad := p.bad[key]; bad {
		p.log.Warn("change ignored: this binary and config already failed to start; change them, or reload explicitly to retry", "reason", req.reason, "failure", why)
		return fmt.Errorf("%w: %s", ErrKnownBad, why)
	}
	return nil
}

// failStart ends req, whose generation n did not become ready: the
// serving generation keeps serving (a rollback), or, when none serves,
// the queued request or the restart policy takes over.
func (p *program) failStart(req *request, n int, why, output string) {
	p.stats.LastError = fmt.Sprintf("gen %d: %s", n, why)
	args := []any{"gen", n, "why", why}
	if p.current != nil {
		args = append(args, "serving_gen", p.current.n)
	}
	if output != "" {
		args = append(args, "output", output)
	}
	if p.current != nil {
		p.stats.Rollbacks++
		p.log.Error("rollback: the new generation failed; the serving one keeps serving", args...)
		p.end(req, p.serving(fmt.Errorf("%w: gen %d: %s", ErrRolledBack, n, why)))
		p.next()
		return
	}
	p.log.Error("start failed", args...)
	p.env.observe(Event{Program: p.name, What: "start-failed", Generation: n, Why: why})
	p.end(req, handoverResult{Err: fmt.Errorf("%w: gen %d: %s", ErrStartFailed, n, why)})
	if p.queued != nil {
		p.next() // a newer request comes first
		return
	}
	p.down(false, 0)
}

// down applies the restart policy once no generation serves or starts.
func (p *program) down(clean bool, uptime time.Duration) {
	d := p.restarts.next(clean, uptime, p.env.jitter())
	if !d.restart {
		p.exitReason = d.reason
		p.enter(phaseExited)
		p.log.Warn("not restarting; the listening socket stays open, start the program with baton start or a reload", "because", d.reason)
		return
	}
	p.restartAt = time.Now().Add(d.delay)
	p.restartT = p.armTimer(d.delay, func(id uint64) event { return evRestart{id} })
	p.enter(phaseBackoff)
	p.log.Info("restarting after a backoff; the listening socket stays open meanwhile", "in", d.delay.Round(time.Millisecond), "consecutive_failures", d.attempt)
}

func (p *program) onRestartTimer(id uint64) {
	if p.phase != phaseBackoff || id != p.restartT.id {
		return
	}
	p.restartT = timer{}
	p.stats.Restarts++
	p.begin(&request{reason: "restart", force: true})
}

// ---- What generations do ----

func (p *program) onNotify(g *generation, m protocol.Message) {
	if p.gens[g.n] != g {
		return // late: the generation is gone
	}
	if m.HasStatus {
		g.status = m.Status
	}
	if m.Stats != nil {
		g.stats = m.Stats
	}
	if m.Watchdog && g == p.current && g.watchdog.id != 0 {
		p.armWatchdog(g)
	}
	starting := p.attempt != nil && p.attempt.gen == g
	if m.ExtendTimeoutUsec > 0 && g.deadline.id != 0 && (starting || !g.stopAt.IsZero()) {
		// The program asks for more time to start or to stop.
		during := "start"
		if !g.stopAt.IsZero() {
			during = "stop"
		}
		g.deadline.cancel()
		g.deadline = p.armTimer(time.Duration(m.ExtendTimeoutUsec)*time.Microsecond, func(id uint64) event { return evDeadline{g: g, id: id, during: during} })
	}
	if m.Ready {
		p.onReady(g)
	}
}

// onReady: a generation is ready. Only the attempt's generation counts,
// and only while it was not told to stop or killed: a READY that comes
// late (after the ready timeout, after a stop signal) changes nothing.
func (p *program) onReady(g *generation) {
	a := p.attempt
	if a == nil || a.gen != g || g.ready || g.killed != "" || !g.stopAt.IsZero() || g.cfg.Type == config.TypeOneshot {
		return
	}
	g.ready, g.readyAt = true, time.Now()
	g.deadline.cancel()
	p.attempt = nil
	if bc := a.gen.cfg.Bake; bc != nil && !p.dev && p.current != nil {
		p.log.Info("ready: baking", "gen", g.n, "pid", g.pid, "ready_in", g.readyAt.Sub(g.started).Round(time.Millisecond))
		p.startBake(g, a.req, bc)
		return
	}
	p.adopt(a.req)
	old := p.current
	p.setCurrent(g) // before the old one is told to stop: its idle connections come here
	p.startMonitor(g)
	p.enter(phaseRunning)
	readyIn := g.readyAt.Sub(g.started).Round(time.Millisecond)
	if old != nil {
		p.stats.Handovers++
		p.stop(old)
		old.byHandover = true
		phases := g.times.phases(g.readyAt, time.Now())
		p.env.handedOver(p.name, readyIn, phases)
		p.log.Info("handover: new generation ready, stopping the old one", "gen", g.n, "pid", g.pid, "ready_in", readyIn, "old_gen", old.n, "old_pid", old.pid, "phases", formatPhases(phases))
	} else {
		p.log.Info("ready", "gen", g.n, "pid", g.pid, "ready_in", readyIn)
	}
	if !p.dev {
		p.env.keep(p.name, g, func(k keptBinary) { p.post(evKept{k}) })
	}
	p.env.observe(Event{Program: p.name, What: "ready", Generation: g.n})
	res := p.serving(nil)
	res.ReadyIn = readyIn
	p.end(a.req, res)
	p.next()
}

func (p *program) onDeadline(ev evDeadline) {
	g := ev.g
	if p.gens[g.n] != g || g.deadline.id != ev.id {
		return
	}
	g.deadline = timer{}
	switch ev.during {
	case "start":
		if p.attempt != nil && p.attempt.gen == g && !g.ready {
			p.kill(g, fmt.Sprintf("not ready within %v", g.cfg.Ready.Timeout))
		}
	case "stop":
		if g.hung && !g.quitSent {
			// It hung: SIGQUIT first, so that a Go program prints every
			// goroutine's stack into the log, then SIGKILL.
			g.quitSent = true
			p.log.Warn("the hung generation outlived its stop timeout: SIGQUIT, for its stacks, then SIGKILL", "gen", g.n, "pid", g.pid)
			g.signal(syscall.SIGQUIT)
			g.deadline = p.armTimer(config.DefaultHungQuitGrace, func(id uint64) event { return evDeadline{g: g, id: id, during: "stop"} })
			return
		}
		p.kill(g, fmt.Sprintf("still running %v after %s", g.cfg.Stop.Timeout, config.SignalName(g.cfg.Stop.Signal)))
	}
}

// stop sends the stop signal to g's process group and arms the kill timer.
func (p *program) stop(g *generation) {
	if !g.stopAt.IsZero() {
		return
	}
	g.stopAt = time.Now()
	g.stopReady()
	g.unwatch()
	g.deadline.cancel()
	g.deadline = p.armTimer(g.cfg.Stop.Timeout, func(id uint64) event { return evDeadline{g: g, id: id, during: "stop"} })
	if err := g.signal(g.cfg.Stop.Signal); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("cannot signal the generation", "gen", g.n, "error", err)
	}
}

// kill sends SIGKILL to g's process group.
func (p *program) kill(g *generation, why string) {
	if g.killed != "" {
		return
	}
	g.killed = why
	g.stopReady()
	g.deadline.cancel()
	p.log.Warn("killing the generation", "gen", g.n, "pid", g.pid, "why", why)
	g.signal(syscall.SIGKILL)
}

// onExit: a generation was reaped.
func (p *program) onExit(g *generation, st processStatus) {
	if p.gens[g.n] != g {
		return
	}
	delete(p.gens, g.n)
	g.deadline.cancel()
	g.close()
	now := time.Now()
	rec := &control.ExitRecord{Generation: g.n, PID: g.pid, Code: st.Code, Signal: st.Signal, At: now,
		Uptime: now.Sub(g.started), Killed: g.killed, Status: g.status}
	if !g.stopAt.IsZero() {
		rec.Drain = now.Sub(g.stopAt)
		if g.byHandover {
			p.env.drained(p.name, rec.Drain)
		}
	}
	if g.killed != "" && p.phase == phaseShutdown {
		p.killedInShutdown = true
	}
	p.stats.LastExit = rec
	p.env.observe(Event{Program: p.name, What: "exit", Generation: g.n})

	args := []any{"gen", g.n, "pid", g.pid, "status", st.String(), "uptime", rec.Uptime.Round(time.Millisecond)}
	if !g.stopAt.IsZero() {
		args = append(args, "drain", rec.Drain.Round(time.Millisecond))
	}
	if g.status != "" {
		args = append(args, "last_status", g.status)
	}
	if g.killed != "" {
		args = append(args, "killed", g.killed)
	}
	switch {
	case p.attempt != nil && p.attempt.gen == g && g.cfg.Type == config.TypeOneshot:
		p.oneshotDone(g, st)
	case p.attempt != nil && p.attempt.gen == g:
		p.log.Info("generation exited", args...)
		why := st.String() + " before it was ready"
		if g.killed != "" {
			why = g.killed
		}
		req := p.attempt.req
		p.attempt = nil
		p.bad[g.key] = why
		p.failStart(req, g.n, why, g.out.String())
	case p.baking != nil && g == p.baking.gen:
		p.log.Error("the generation baking exited", append(args, "output", g.out.String())...)
		p.endBake(false, "exited during the bake: "+st.String())
	case g == p.current:
		p.setCurrent(nil)
		if st.clean() {
			p.log.Warn("serving generation exited on its own", args...)
		} else {
			p.log.Error("serving generation crashed", append(args, "output", g.out.String())...)
		}
		if p.baking != nil {
			p.endBake(true, "the old generation exited: "+st.String())
		} else if p.attempt != nil {
			p.enter(phaseStarting) // the handover under way may yet serve
		} else {
			p.down(st.clean(), rec.Uptime)
		}
	default:
		level := hclog.Info
		if !st.clean() {
			level = hclog.Warn
		}
		p.log.Log(level, "generation exited", args...)
	}
	p.checkStopped()
}

// armTimer starts a loop timer that posts ev(id) after d.
func (p *program) armTimer(d time.Duration, ev func(id uint64) event) timer {
	p.timerSeq++
	id := p.timerSeq
	return timer{id: id, at: time.Now().Add(d), stop: p.env.after(d, func() { p.post(ev(id)) })}
}

// output takes a line of a generation's output: into the program's ring
// for baton logs, and into its log file when it has one, baton's log
// otherwise. It runs on the generation's pump goroutines.
func (p *program) output(g *generation, line []byte) {
	now := time.Now()
	p.ring.add(LogLine{Time: now, Generation: g.n, Text: string(line)})
	if f := p.env.logFiles.get(g.cfg.Log); f != nil {
		if _, err := f.Write(formatLine(now, g.n, g.pid, string(line))); err != nil {
			p.logErr.Do(func() {
				p.log.Error("cannot write the program's log file; its output goes to baton's log", "file", g.cfg.Log.Path, "error", err)
			})
			reemit(g.log, line)
		}
		return
	}
	reemit(g.log, line)
}

// oneshotDone takes the exit of a one-shot's run: exit status 0 completes
// it (the programs that start after it may start), anything else is a
// failed start, which its restart policy (never, by default) answers.
func (p *program) oneshotDone(g *generation, st processStatus) {
	req := p.attempt.req
	p.attempt = nil
	if !st.clean() {
		why := st.String()
		if g.killed != "" {
			why = g.killed
		}
		p.failStart(req, g.n, why, g.out.String())
		if p.phase == phaseExited {
			p.exitReason = "failed: " + why
			p.reportDep()
		}
		return
	}
	p.log.Info("one-shot completed", "gen", g.n, "pid", g.pid)
	p.exitReason = oneshotDone
	p.enter(phaseExited)
	p.end(req, handoverResult{Gen: g.n})
}
