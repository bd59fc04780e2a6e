package supervisor

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/supervisor/control"

	"github.com/baton-run/baton/supervisor/config"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/go-hclog"
)

// Errors a handover request can end with.
var (
	// ErrRolledBack: the new generation exited or missed its ready
	// timeout; the serving generation, if any, keeps serving.
	ErrRolledBack = errors.New("supervisor: rolled back")
	// ErrUnchanged: a watcher saw content that already serves.
	ErrUnchanged = errors.New("supervisor: unchanged")
	// ErrKnownBad: a watcher saw content that already failed to start.
	ErrKnownBad = errors.New("supervisor: this binary and config already failed to start")
	// ErrStopping: the program is being stopped.
	ErrStopping = errors.New("supervisor: program is stopping")
	// ErrStopped: the program was stopped with Stop; Start it first.
	ErrStopped = errors.New("supervisor: program is stopped; start it first")
)

// program is one program block at run time. A single goroutine, run, owns
// its state; everything else talks to it through events.
type program struct {
	sup    *Supervisor
	name   string
	log    hclog.Logger // baton's events about this program
	outLog hclog.Logger // the program's own output
	ring   *ring        // its last output lines
	logErr sync.Once
	events chan event
	quit   chan struct{} // closed when run returns

	// loop-owned
	cfg            *config.Program
	socks          []*socket // the sockets of cfg, held for it
	gens           map[int]*generation
	current        *generation // the newest that became ready and still runs
	pending        *generation // starting, not ready yet
	pendingReq     *handover
	queued         *handover // requests that came during a handover, merged
	nextGen        int
	bad            map[string]string // keys that failed to start → why
	crashes        int               // consecutive, for the backoff
	restartAt      time.Time
	restartT       *time.Timer
	restartID      uint64 // the id of restartT
	timerSeq       uint64 // ids for deadline and restart timers
	stopping       bool
	killedStopping bool   // a generation was killed while the program stopped
	exitedBy       string // control.StateExited: why
	stats          programStats
	stopWait       []chan struct{}
	awaitBuild     bool // baton dev: the first build has not produced a binary yet
	paused         bool // stopped on request (Stop); Start resumes
	pauseWait      []chan struct{}
	lastKey        string // the key of the last generation started
}

// programStats are a program's counters and last events.
type programStats struct {
	Restarts  int                 // restarts after the serving generation exited on its own
	Handovers int                 // completed handovers
	Rollbacks int                 // new generations that failed while another served
	LastExit  *control.ExitRecord // the last generation that exited
	LastError string              // the last failed start or handover
}

type handover struct {
	reason   string
	explicit bool            // SIGHUP, reload, restart: always tried
	cfg      *config.Program // the config to start with; nil keeps the current
	socks    []*socket
	replies  []chan handoverResult
}

// handoverResult is the outcome of a handover request.
type handoverResult struct {
	Gen     int           // the generation that serves now (0 if none)
	ReadyIn time.Duration // how long the new generation took to be ready
	Err     error         // ErrRolledBack, ErrUnchanged, ErrKnownBad, ErrStopping
}

type event interface{}

type (
	evHandover struct{ h *handover }
	evStop     struct{ done chan struct{} }
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
	evRestart struct{ id uint64 }
	evStatus  struct{ reply chan control.ProgramStatus }
	evPause   struct{ done chan struct{} }
	evResume  struct{ h *handover }
)

func newProgram(sup *Supervisor, cfg *config.Program, socks []*socket) *program {
	return &program{
		sup:    sup,
		name:   cfg.Name,
		log:    sup.log.With("program", cfg.Name),
		outLog: sup.outLog.Named(cfg.Name),
		events: make(chan event),
		quit:   make(chan struct{}),
		cfg:    cfg,
		socks:  socks,
		gens:   map[int]*generation{},
		ring:   newRing(),
		bad:    map[string]string{},
		// baton dev starts the program with its first good build.
		awaitBuild: sup.building(cfg),
	}
}

// output takes a line of a generation's output: into the program's ring
// for baton logs, and into its log file when it has one, baton's log
// otherwise. It runs on the generation's pump goroutines.
func (p *program) output(g *generation, line []byte) {
	now := time.Now()
	p.ring.add(LogLine{Time: now, Generation: g.n, Text: string(line)})
	if f := p.sup.logFiles.get(g.cfg.Log); f != nil {
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

// post delivers ev to the loop, or drops it once the loop has ended.
func (p *program) post(ev event) {
	select {
	case p.events <- ev:
	case <-p.quit:
	}
}

// request asks the loop for a handover and waits for its outcome. posted,
// if not nil, is told once the loop has the request.
func (p *program) request(h *handover, posted chan<- struct{}) handoverResult {
	reply := make(chan handoverResult, 1)
	h.replies = []chan handoverResult{reply}
	select {
	case p.events <- evHandover{h}:
		if posted != nil {
			posted <- struct{}{}
		}
	case <-p.quit:
		if posted != nil {
			posted <- struct{}{}
		}
		if h.socks != nil {
			p.sup.sockets.releaseAll(h.socks)
		}
		return handoverResult{Err: ErrStopping}
	}
	return <-reply
}

// run is the program's goroutine. It starts the first generation and
// returns once the program was stopped and every generation was reaped.
func (p *program) run() {
	defer close(p.quit)
	if !p.awaitBuild {
		p.begin(&handover{reason: "start", explicit: true})
	}
	for {
		ev := <-p.events
		p.handle(ev)
		if p.stopping && len(p.gens) == 0 && p.pending == nil {
			p.finish()
			return
		}
	}
}

func (p *program) handle(ev event) {
	switch ev := ev.(type) {
	case evHandover:
		p.onHandover(ev.h)
	case evReady:
		p.onReady(ev.g)
	case evNotify:
		p.onNotify(ev.g, ev.msg)
	case evDeadline:
		p.onDeadline(ev)
	case evExit:
		p.onExit(ev.g, ev.st)
	case evRestart:
		if p.restartT != nil && ev.id == p.restartID {
			p.restartT = nil
			if !p.stopping && p.current == nil && p.pending == nil {
				p.stats.Restarts++
				p.begin(&handover{reason: "restart", explicit: true})
			}
		}
	case evStop:
		p.stopWait = append(p.stopWait, ev.done)
		p.stopAll()
	case evKill:
		p.stopAll()
		for _, g := range p.gens {
			p.kill(g, "immediate stop (SIGQUIT)")
		}
	case evStatus:
		ev.reply <- p.status()
	case evPause:
		p.onPause(ev.done)
	case evResume:
		p.onResume(ev.h)
	}
	if p.paused && len(p.gens) == 0 {
		for _, c := range p.pauseWait {
			close(c)
		}
		p.pauseWait = nil
	}
}

// onPause stops every generation but keeps the program, its config and
// its sockets: clients wait in the accept queue until it starts again.
func (p *program) onPause(done chan struct{}) {
	p.pauseWait = append(p.pauseWait, done)
	if p.paused || p.stopping {
		return
	}
	p.paused = true
	p.log.Info("stopping the program on request; its sockets stay open")
	if p.restartT != nil {
		p.restartT.Stop()
		p.restartT = nil
	}
	if q := p.queued; q != nil {
		p.queued = nil
		p.drop(q, ErrStopped)
	}
	for _, g := range p.gens {
		p.stop(g)
	}
}

func (p *program) onResume(h *handover) {
	if p.stopping {
		p.reply(h, ErrStopping)
		return
	}
	if !p.paused {
		if p.current == nil && p.pending == nil && p.restartT == nil && !p.awaitBuild {
			p.begin(h) // down by its restart policy: start it
			return
		}
		p.reply(h, nil) // already running, or starting
		return
	}
	if len(p.gens) > 0 {
		p.reply(h, fmt.Errorf("supervisor: program is still stopping; try again once it stopped"))
		return
	}
	p.paused, p.crashes = false, 0
	p.log.Info("starting the program on request")
	p.begin(h)
}

func (p *program) onHandover(h *handover) {
	if p.stopping {
		p.drop(h, ErrStopping)
		return
	}
	if p.paused {
		// A stopped program takes a new config for its next start.
		if h.cfg != nil {
			p.sup.sockets.releaseAll(p.socks)
			p.cfg, p.socks = h.cfg, h.socks
			h.socks = nil
		}
		p.reply(h, ErrStopped)
		return
	}
	if p.pending != nil {
		// One handover at a time: requests that come meanwhile are merged
		// into one more, started when this one ends.
		if q := p.queued; q != nil {
			q.explicit = q.explicit || h.explicit
			q.reason = h.reason
			if h.cfg != nil {
				if q.socks != nil {
					p.sup.sockets.releaseAll(q.socks)
				}
				q.cfg, q.socks = h.cfg, h.socks
			}
			q.replies = append(q.replies, h.replies...)
		} else {
			p.queued = h
		}
		p.log.Debug("handover requested during a handover: queued", "reason", h.reason)
		return
	}
	p.begin(h)
}

// begin starts a generation for h.
func (p *program) begin(h *handover) {
	if p.restartT != nil {
		p.restartT.Stop()
		p.restartT = nil
	}
	cfg, socks := p.cfg, p.socks
	if h.cfg != nil {
		cfg, socks = h.cfg, h.socks
	}
	path, key, err := executable(cfg)
	if err == nil && !h.explicit && p.skip(h, key) {
		return
	}
	p.exitedBy = ""
	p.nextGen++
	n := p.nextGen
	if err != nil {
		p.failed(h, n, fmt.Sprintf("cannot start: %v", err), "")
		return
	}
	p.awaitBuild, p.lastKey = false, key
	p.sup.sockets.hold(socks)
	g, err := spawn(spawnSpec{
		program: p.name, n: n, cfg: cfg, path: path, key: key, sockets: socks,
		runDir: p.sup.runDir, baseEnv: p.sup.baseEnv, logger: p.outLog, spawner: p.sup.spawner,
		output: p.output,
	})
	if err != nil {
		p.sup.sockets.releaseAll(socks)
		p.failed(h, n, fmt.Sprintf("cannot start: %v", err), "")
		return
	}
	p.gens[n] = g
	p.pending, p.pendingReq = g, h
	p.log.Info("starting", "gen", n, "pid", g.pid, "reason", h.reason, "command", strings.Join(cfg.Command, " "))
	go p.reap(g)
	go g.notify.read(
		func(m protocol.Message) { p.post(evNotify{g, m}) },
		func(err error) { p.log.Debug("bad notify message", "gen", n, "error", err) },
	)
	p.timer(g, cfg.Ready.Timeout, "start")
	switch cfg.Ready.Mode {
	case config.ReadyDelay:
		time.AfterFunc(cfg.Ready.Delay, func() { p.post(evReady{g}) })
	case config.ReadyHTTP:
		go p.probe(g)
	}
}

// skip reports whether a watcher-requested generation would run what
// already serves or already failed, and then ends h.
func (p *program) skip(h *handover, key string) bool {
	if (p.current != nil && p.current.key == key) || (p.current == nil && p.pending == nil && p.lastKey == key) {
		p.log.Info("change ignored: this binary and config already serve", "reason", h.reason)
		p.drop(h, ErrUnchanged)
		return true
	}
	if why, bad := p.bad[key]; bad {
		p.log.Warn("change ignored: this binary and config already failed to start; change them, or reload explicitly to retry", "reason", h.reason, "failure", why)
		p.drop(h, fmt.Errorf("%w: %s", ErrKnownBad, why))
		return true
	}
	return false
}

// drop ends h without a generation, releasing what it holds, and starts
// the next queued request.
func (p *program) drop(h *handover, err error) {
	if h.socks != nil {
		p.sup.sockets.releaseAll(h.socks)
		h.socks = nil
	}
	p.reply(h, err)
	p.next()
}

// timer arms g's deadline: the ready timeout during "start", the stop
// timeout during "stop". A deadline event that fires after the timer was
// replaced carries an old id and is ignored.
func (p *program) timer(g *generation, d time.Duration, during string) {
	p.timerSeq++
	id := p.timerSeq
	if g.deadline != nil {
		g.deadline.Stop()
	}
	g.deadlineID = id
	g.deadline = time.AfterFunc(d, func() { p.post(evDeadline{g: g, id: id, during: during}) })
}

func (p *program) reap(g *generation) {
	st := g.wait()
	// The output of its last moments explains a failure: read it to the
	// end first. The group is dead, so the pipes close, unless a process
	// that left the group holds them: the wait is bounded.
	out := make(chan struct{})
	go func() {
		g.pumps.Wait()
		close(out)
	}()
	select {
	case <-out:
	case <-time.After(2 * time.Second):
	}
	p.post(evExit{g, st})
}

func (p *program) onNotify(g *generation, m protocol.Message) {
	if p.gens[g.n] != g {
		return // late: the generation is gone
	}
	if m.HasStatus {
		g.status = m.Status
	}
	if m.ExtendTimeoutUsec > 0 && g.deadline != nil && (g == p.pending || !g.stopAt.IsZero()) {
		// The program asks for more time to start or to stop.
		during := "start"
		if !g.stopAt.IsZero() {
			during = "stop"
		}
		p.timer(g, time.Duration(m.ExtendTimeoutUsec)*time.Microsecond, during)
	}
	if m.Ready {
		p.onReady(g)
	}
}

func (p *program) onReady(g *generation) {
	if g != p.pending || g.ready || g.killed != "" {
		return // READY after the ready timeout, or from a generation that was already handled
	}
	g.ready, g.readyAt = true, time.Now()
	if g.deadline != nil {
		g.deadline.Stop()
		g.deadline = nil
	}
	h := p.pendingReq
	p.pending, p.pendingReq = nil, nil
	if h.cfg != nil {
		p.sup.sockets.releaseAll(p.socks)
		p.cfg, p.socks = h.cfg, h.socks
		h.socks = nil
	}
	old := p.current
	p.current = g
	readyIn := g.readyAt.Sub(g.started).Round(time.Millisecond)
	if old != nil {
		p.stats.Handovers++
		p.sup.metrics.observeHandover(p.name, readyIn)
		p.log.Info("handover: new generation ready, stopping the old one", "gen", g.n, "pid", g.pid, "ready_in", readyIn, "old_gen", old.n, "old_pid", old.pid)
		p.stop(old)
	} else {
		p.log.Info("ready", "gen", g.n, "pid", g.pid, "ready_in", readyIn)
	}
	p.sup.observe(p.name, "ready", g.n)
	p.replyResult(h, handoverResult{Gen: g.n, ReadyIn: readyIn})
	p.next()
}

// next starts the queued handover, if any.
func (p *program) next() {
	if q := p.queued; q != nil && p.pending == nil && !p.stopping {
		p.queued = nil
		p.begin(q)
	}
}

func (p *program) onDeadline(ev evDeadline) {
	g := ev.g
	if p.gens[g.n] != g || g.deadlineID != ev.id {
		return
	}
	g.deadline = nil
	switch ev.during {
	case "start":
		if g == p.pending && !g.ready {
			p.kill(g, fmt.Sprintf("not ready within %v", g.cfg.Ready.Timeout))
		}
	case "stop":
		p.kill(g, fmt.Sprintf("still running %v after %s", g.cfg.Stop.Timeout, config.SignalName(g.cfg.Stop.Signal)))
	}
}

// stop sends the stop signal to g's process group and arms the kill timer.
func (p *program) stop(g *generation) {
	if !g.stopAt.IsZero() {
		return
	}
	g.stopAt = time.Now()
	p.timer(g, g.cfg.Stop.Timeout, "stop")
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
	if g.deadline != nil {
		g.deadline.Stop()
		g.deadline = nil
	}
	p.log.Warn("killing the generation", "gen", g.n, "pid", g.pid, "why", why)
	g.signal(syscall.SIGKILL)
}

func (p *program) onExit(g *generation, st processStatus) {
	if p.gens[g.n] != g {
		return
	}
	delete(p.gens, g.n)
	if g.deadline != nil {
		g.deadline.Stop()
		g.deadline = nil
	}
	g.notify.close()
	p.sup.sockets.releaseAll(g.sockets)
	close(g.done)
	now := time.Now()
	rec := &control.ExitRecord{Generation: g.n, PID: g.pid, Code: st.Code, Signal: st.Signal, At: now,
		Uptime: now.Sub(g.started), Killed: g.killed, Status: g.status}
	if !g.stopAt.IsZero() {
		rec.Drain = now.Sub(g.stopAt)
	}
	if g.killed != "" && p.stopping {
		p.killedStopping = true
	}
	p.stats.LastExit = rec
	p.sup.observe(p.name, "exit", g.n)

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
	case g == p.pending:
		why := st.String() + " before it was ready"
		if g.killed != "" {
			why = g.killed
		}
		p.log.Info("generation exited", args...)
		p.pending = nil
		h := p.pendingReq
		p.pendingReq = nil
		if p.stopping || p.paused {
			p.drop(h, ErrStopped)
			return
		}
		p.bad[g.key] = why
		p.failed(h, g.n, why, g.out.String())
	case g == p.current:
		p.current = nil
		if !g.stopAt.IsZero() {
			p.log.Info("generation exited", args...)
			return
		}
		if st.clean() {
			p.log.Warn("serving generation exited on its own", args...)
		} else {
			p.log.Error("serving generation crashed", append(args, "output", g.out.String())...)
		}
		if p.pending == nil {
			p.restart(rec, st)
		}
	default:
		level := hclog.Info
		if !st.clean() {
			level = hclog.Warn
		}
		p.log.Log(level, "generation exited", args...)
	}
}

// failed ends handover h, whose generation n did not become ready: the
// serving generation keeps serving, or, when none serves, the restart
// policy takes over.
func (p *program) failed(h *handover, n int, why, output string) {
	p.stats.LastError = fmt.Sprintf("gen %d: %s", n, why)
	if p.current != nil {
		p.stats.Rollbacks++
		args := []any{"gen", n, "why", why, "serving_gen", p.current.n}
		if output != "" {
			args = append(args, "output", output)
		}
		p.log.Error("rollback: the new generation failed; the serving one keeps serving", args...)
	} else {
		args := []any{"gen", n, "why", why}
		if output != "" {
			args = append(args, "output", output)
		}
		p.log.Error("start failed", args...)
	}
	err := fmt.Errorf("%w: gen %d: %s", ErrRolledBack, n, why)
	if p.current == nil && !p.stopping && p.queued == nil {
		p.restart(&control.ExitRecord{Generation: n}, processStatus{Code: -1})
	}
	p.drop(h, err)
}

// restart applies the restart policy after the program went down.
func (p *program) restart(rec *control.ExitRecord, st processStatus) {
	if p.paused {
		return
	}
	if p.queued != nil {
		p.next() // a requested start comes first
		return
	}
	pol := p.cfg.Restart
	switch {
	case pol.Policy == config.RestartNever:
		p.exitedBy = "restart policy \"never\""
	case pol.Policy == config.RestartOnFailure && st.clean():
		p.exitedBy = "exit status 0 and restart policy \"on-failure\""
	}
	if p.exitedBy != "" {
		p.log.Warn("not restarting; the listening socket stays open, start the program with baton start or a reload", "because", p.exitedBy)
		return
	}
	if rec.Uptime >= pol.ResetAfter {
		p.crashes = 0
	}
	p.crashes++
	d := backoff(pol, p.crashes, rand.Float64())
	p.restartAt = time.Now().Add(d)
	p.log.Info("restarting after a backoff; the listening socket stays open meanwhile", "in", d.Round(time.Millisecond), "consecutive_failures", p.crashes)
	p.timerSeq++
	id := p.timerSeq
	p.restartID = id
	p.restartT = time.AfterFunc(d, func() { p.post(evRestart{id}) })
}

// backoff is the wait before restart number n (1, 2, …): the backoff
// doubled each time, capped at max_backoff, less up to 20 % of jitter so
// that programs that failed together do not restart together.
func backoff(pol config.RestartConfig, n int, jitter float64) time.Duration {
	d := pol.Backoff
	for i := 1; i < n && d < pol.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, pol.MaxBackoff)
	return d - time.Duration(float64(d)*0.2*jitter)
}

// stopAll stops every generation and refuses further handovers.
func (p *program) stopAll() {
	if !p.stopping {
		p.stopping = true
		p.log.Info("stopping")
	}
	if p.restartT != nil {
		p.restartT.Stop()
		p.restartT = nil
	}
	if q := p.queued; q != nil {
		p.queued = nil
		p.drop(q, ErrStopping)
	}
	for _, g := range p.gens {
		p.stop(g)
	}
}

func (p *program) finish() {
	p.sup.sockets.releaseAll(p.socks)
	p.socks = nil
	p.log.Info("stopped")
	for _, c := range p.stopWait {
		close(c)
	}
}

func (p *program) reply(h *handover, err error) {
	gen := 0
	if p.current != nil {
		gen = p.current.n
	}
	p.replyResult(h, handoverResult{Gen: gen, Err: err})
}

func (p *program) replyResult(h *handover, res handoverResult) {
	if h == nil {
		return
	}
	for _, c := range h.replies {
		c <- res
	}
	h.replies = nil
}
