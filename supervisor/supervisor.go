package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-run/baton/internal/watch"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
)

// Config configures a Supervisor.
type Config struct {
	// File is the path of the config file. Default
	// config.DefaultConfigFile.
	File string
	// Logger receives baton's events and the programs' output. Default: a
	// logger named "baton" on LogOutput, with the file's log block.
	Logger hclog.Logger
	// LogOutput is where the default logger writes. Default os.Stderr.
	LogOutput io.Writer
	// Dev turns on the build blocks (baton dev): programs are built from
	// their sources, and rebuilt and handed over when the sources change.
	Dev bool
	// Console receives baton dev's human output, one line per cycle; nil
	// for none. Color adds ANSI colours to it.
	Console io.Writer
	Color   bool // ANSI colours on Console
	// Version is baton's own, which Upgrade and UpgradeStatus report.
	Version string
	// Resume, from TakeUpgrade, makes New go on with the state of the
	// image of baton that an upgrade replaced, instead of starting anew.
	Resume *Resumed
	// OnExec, when set, is called with true just before an upgrade execs
	// the new image, and with false when the exec failed: cmd/baton
	// ignores SIGHUP and SIGUSR2 across the exec, which would otherwise
	// end the new image before it catches them.
	OnExec func(execing bool)
}

// ErrKilled is returned by Run when a child had to be killed with SIGKILL
// while baton stopped, because it outlived its stop timeout or baton was
// told to stop immediately.
var ErrKilled = errors.New("supervisor: a child had to be killed")

// ErrNoProgram: no program has that name.
var ErrNoProgram = errors.New("supervisor: no such program")

// Supervisor runs the programs of a config file: it owns their listening
// sockets and hands them from each generation to the next.
//
// Run's goroutine owns the config, the program table and the builders,
// in a loop that answers messages (tableflip's Upgrader is the model).
// Every method posts a message to it, or to the config reader, which
// reads and parses the file on a goroutine of its own so that no file I/O
// runs in the loop, and waits for the answer. No lock guards the
// supervisor's state. The methods are safe for concurrent use; those that
// need the loop wait for Run to start it, and answer ErrStopping (or
// report every program stopped) once Run has returned.
type Supervisor struct {
	cfg       Config
	path      string       // the config file, absolute
	log       hclog.Logger // baton's events
	outLog    hclog.Logger // the programs' output
	ownLogger bool         // log and outLog follow the file's log level
	console   *console
	pool      *socketPool
	logFiles  logFiles
	systemd   *systemd
	runDir    string
	baseEnv   []string
	controlLn net.Listener // nil when the control socket is off
	metricsLn net.Listener // nil without a metrics block
	healthLn  net.Listener // nil without a health block (readyz.go)
	health    healthState
	metrics   *metrics
	hooks     []func(Event) // Observe's, fixed once Run starts
	starter   *starter      // set by Run
	buildSeq  atomic.Int64  // numbers every build of every builder

	msgs     chan any            // to the loop
	loads    chan *reloadOp      // to the config reader
	ended    chan *program       // programs whose goroutine returned
	loopDone chan struct{}       // closed when the loop returned
	running  atomic.Bool         // Run was called
	final    []*program          // the programs when the loop ended
	runCtx   context.Context     // cancelled when baton begins to stop
	bg       sync.WaitGroup      // the reader, servers and builders
	env      *programEnv         // given to every program
	killed   bool                // Kill was called
	watcher  *watch.Watcher      // set by Run
	file     *config.File        // owned by the loop: what runs
	programs map[string]*program // owned by the loop
	builders map[string]*builder // owned by the loop
	stopping bool                // owned by the loop: baton stops
	live     int                 // owned by the loop: programs whose goroutine runs
	deps     map[string]depState // owned by the loop: each program's last report, for start order
	waiting  map[string]string   // owned by the loop: programs waiting for their after list, and for what

	// Upgrading in place (upgrade.go).
	upgrading   *upgradeOp  // owned by the loop: the upgrade under way
	upgradeInfo upgradeInfo // for UpgradeStatus
	own         ownServers  // baton's own servers, which an upgrade holds
	keeps       inflight    // copies of binaries kept for rollback, under way
	resumed     *Resumed    // the state this image went on from; nil when it started anew
	notifySeq   int64       // resumed: the starter's sequence
	pending     []msgWatch  // resumed: changes noticed during the upgrade
	// resumed: reloads asked for during the upgrade
	pendingReloads []ReloadRequest
}

// Event is something that happened to a generation, for observers.
type Event struct {
	Program string // the program's name
	// What happened: "ready", "exit", or "start-failed" (the generation
	// failed to become ready while none served).
	What       string
	Generation int    // the generation it happened to
	Why        string // start-failed: why
}

// The messages of the supervisor's loop.
type (
	msgApply struct { // from the config reader: a config to apply
		op     *reloadOp
		file   *config.File
		leases map[string]*lease // the sockets of the programs concerned
	}
	msgProgram struct { // look a program up
		name  string
		reply chan *program
	}
	msgPrograms struct{ reply chan []*program } // every program, in config order
	msgWatch    struct {                        // a watched file of a program changed
		program, reason string
		force           bool
		trigger         time.Time
	}
	msgKill struct{}
	msgDep  struct { // a program's report for the programs that start after it
		program string
		st      depState
	}
)

// New loads the config file and opens every listening socket. It returns
// a *config.Error when the file does not validate, and an error naming
// the listener when a socket cannot be opened; nothing is left open then.
func New(cfg Config) (*Supervisor, error) {
	if cfg.File == "" {
		cfg.File = config.DefaultConfigFile
	}
	if cfg.Resume != nil {
		return resume(cfg)
	}
	file, diags := config.Load(cfg.File)
	if diags.HasErrors() {
		return nil, &config.Error{Diags: diags}
	}
	s := newSupervisor(cfg, file)
	for _, d := range diags {
		s.log.Warn(config.FormatDiagnostic(d))
	}
	var err error
	if s.systemd, err = takeSystemd(s.pool); err != nil {
		return nil, err
	}
	s.baseEnv = cleanEnv(os.Environ())

	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if s.runDir, err = os.MkdirTemp(dir, "baton-"); err != nil {
		return nil, fmt.Errorf("create the runtime directory: %w", err)
	}
	leases := map[string]*lease{}
	fail := func(err error) (*Supervisor, error) {
		for _, l := range leases {
			l.release()
		}
		if s.controlLn != nil {
			s.controlLn.Close()
		}
		if s.metricsLn != nil {
			s.metricsLn.Close()
		}
		if s.healthLn != nil {
			s.healthLn.Close()
		}
		os.RemoveAll(s.runDir)
		s.logFiles.closeAll()
		return nil, err
	}
	// Searchable, not listable: programs that run as another user reach
	// their own notify socket in it.
	if err := os.Chmod(s.runDir, 0o711); err != nil {
		return fail(fmt.Errorf("create the runtime directory: %w", err))
	}
	for _, p := range file.Programs {
		l, err := s.pool.acquire(p.Name, p.Listeners)
		if err != nil {
			return fail(fmt.Errorf("program %q: %w", p.Name, err))
		}
		leases[p.Name] = l
	}
	if file.Control.Enabled {
		if s.controlLn, err = listenControl(file.Control.Socket); err != nil {
			return fail(err)
		}
	}
	if addr := file.Metrics.Address; addr != "" {
		if s.metricsLn, err = net.Listen("tcp", addr); err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
		s.metrics = newMetrics(s)
	}
	if addr := file.Health.Address; addr != "" {
		if s.healthLn, err = net.Listen("tcp", addr); err != nil {
			return fail(fmt.Errorf("health: %w", err))
		}
	}
	s.env = s.programEnv(file)
	for _, p := range file.Programs {
		s.programs[p.Name] = newProgram(s.env, p, leases[p.Name], s.dev(p))
	}
	return s, nil
}

// newSupervisor makes the supervisor of file, with its loggers.
func newSupervisor(cfg Config, file *config.File) *Supervisor {
	s := &Supervisor{
		cfg:      cfg,
		file:     file,
		pool:     newSocketPool(),
		programs: map[string]*program{},
		builders: map[string]*builder{},
		deps:     map[string]depState{},
		waiting:  map[string]string{},
		console:  &console{w: cfg.Console, color: cfg.Color, dir: file.Dir},
		msgs:     make(chan any),
		loads:    make(chan *reloadOp),
		ended:    make(chan *program),
		loopDone: make(chan struct{}),
	}
	s.path, _ = filepath.Abs(cfg.File)
	s.log, s.outLog = cfg.Logger, nil
	if s.log == nil {
		s.ownLogger = true
		var out io.Writer = os.Stderr
		if cfg.LogOutput != nil {
			out = cfg.LogOutput
		}
		if lf := file.Log.File; lf.Path != "" {
			// baton's log goes to its file, rotated, instead of stderr.
			out = s.logFiles.get(lf)
		}
		level := hclog.LevelFromString(file.Log.Level)
		opts := func(level hclog.Level, name string) *hclog.LoggerOptions {
			return &hclog.LoggerOptions{Name: name, Level: level, Output: out, JSONFormat: file.Log.Format == "json"}
		}
		s.log = hclog.New(opts(s.ownLevel(file), "baton"))
		s.outLog = hclog.New(opts(level, "baton.program"))
	} else {
		s.outLog = s.log.Named("program")
	}
	return s
}

// programEnv is the environment of every program of the supervisor.
func (s *Supervisor) programEnv(file *config.File) *programEnv {
	return &programEnv{
		log:      s.log,
		outLog:   s.outLog,
		logFiles: &s.logFiles,
		resolve:  resolve,
		start:    func(sp spawnSpec) (*generation, error) { return s.starter.start(sp) },
		after:    realAfter,
		jitter:   rand.Float64,
		observe: func(e Event) {
			s.systemd.observe(e)
			for _, h := range s.hooks {
				h(e)
			}
		},
		handedOver: s.metrics.observeHandover,
		drained:    s.metrics.observeDrain,
		baked:      s.metrics.observeBake,
		bakeProbe:  bakeProbe,
		monitor:    monitor,
		depChanged: func(name string, st depState) {
			go s.post(msgDep{program: name, st: st}) // never wait on the loop from a program
		},
		keep: (&keeper{dir: filepath.Join(file.Dir, ".baton", "bin"), log: s.log, bg: func(f func()) {
			s.keeps.add(1)
			s.background(func() {
				defer s.keeps.add(-1)
				f()
			})
		}}).keep,
	}
}

// ownLevel is the level of baton's own events: baton dev keeps them to
// warnings unless the config file sets a level, so that the terminal
// shows the cycles and the programs' output.
func (s *Supervisor) ownLevel(f *config.File) hclog.Level {
	level := hclog.LevelFromString(f.Log.Level)
	if s.cfg.Dev && !f.Log.LevelSet && level < hclog.Warn {
		return hclog.Warn
	}
	return level
}

// dev reports whether p is built by baton dev.
func (s *Supervisor) dev(p *config.Program) bool {
	return s.cfg.Dev && p.Build != nil
}

// cleanEnv drops the protocol variables baton itself may have been
// started with, so that they do not reach its programs.
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if config.ReservedEnv(k) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Logger returns the supervisor's logger.
func (s *Supervisor) Logger() hclog.Logger { return s.log }

// Observe registers f to be called, from a program's goroutine, for every
// generation that becomes ready or exits. f must not block. Call it before
// Run.
func (s *Supervisor) Observe(f func(Event)) {
	if s.running.Load() {
		panic("supervisor: Observe called after Run")
	}
	s.hooks = append(s.hooks, f)
}

// Run starts every program and supervises them until ctx is cancelled,
// then stops them all gracefully and returns once every child was reaped.
// It returns ErrKilled when a child had to be killed on the way.
//
// Called on the process's main thread, Run forks every child from it (see
// spawner_linux.go), which baton upgrade needs.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run called twice")
	}
	if !lockMainThread() {
		return s.run(ctx, newSpawner())
	}
	defer runtime.UnlockOSThread()
	sp := newMainSpawner()
	errc := make(chan error, 1)
	go func() { errc <- s.run(ctx, sp) }()
	sp.serve() // until run closes it
	return <-errc
}

func (s *Supervisor) run(ctx context.Context, sp *spawner) error {
	s.starter = &starter{spawner: sp, runDir: s.runDir, baseEnv: s.baseEnv, outLog: s.outLog}
	s.starter.seq.Store(s.notifySeq)
	runCtx, stopBackground := context.WithCancel(ctx)
	s.runCtx = runCtx
	s.watcher = watch.New(s.log, s.file.Watch.Poll)
	s.background(s.reader)
	if every := s.systemd.watchdogEvery(); every > 0 {
		s.background(s.pingSystemd(every))
	}
	if s.controlLn != nil {
		s.serveOwn(s.controlLn, s.serveControl)
	}
	if s.metricsLn != nil {
		s.serveOwn(s.metricsLn, s.serveMetrics)
	}
	if s.healthLn != nil {
		s.serveOwn(s.healthLn, s.serveHealth)
	}
	for _, name := range s.order() {
		if p := s.programs[name]; s.dev(p.cfg) {
			s.startBuilder(p, p.cfg)
		}
	}
	// The first watch set-up is waited for, so that a change made once a
	// program is up is always seen; later ones are not.
	<-s.watcher.Set(s.watchTargets())
	for _, name := range s.order() {
		s.startProgram(s.programs[name])
	}
	s.systemd.expect(s.order())
	if s.resumed != nil {
		s.resumedRun()
	} else {
		s.log.Info("baton started", "config", s.cfg.File, "programs", strings.Join(s.order(), ","), "pid", os.Getpid())
	}

	s.loop(ctx, stopBackground)

	s.watcher.Close()
	stopBackground()
	s.bg.Wait()
	sp.close()
	os.RemoveAll(s.runDir)
	s.logFiles.closeAll()
	for _, p := range s.final {
		if p.killedInShutdown {
			s.log.Warn("baton stopped; a child had to be killed")
			return ErrKilled
		}
	}
	s.log.Info("baton stopped")
	return nil
}

// loop is the supervisor's goroutine: it answers messages until baton
// stopped and every program's goroutine returned.
func (s *Supervisor) loop(ctx context.Context, stopBackground func()) {
	defer close(s.loopDone)
	done := ctx.Done()
	var delay <-chan time.Time // the shutdown delay runs
	for !s.stopping || s.live > 0 {
		select {
		case <-done:
			done = nil
			delay = s.beginStop(context.Cause(ctx), stopBackground)
		case <-delay:
			delay = nil
			s.endDelay(stopBackground)
		case <-s.ended:
			s.live--
		case m := <-s.msgs:
			switch m := m.(type) {
			case msgApply:
				s.apply(m)
			case msgProgram:
				m.reply <- s.programs[m.name]
			case msgPrograms:
				m.reply <- s.inOrder()
			case msgWatch:
				s.watchHandover(m)
			case msgDep:
				if m.st.seq > s.deps[m.program].seq {
					s.deps[m.program] = m.st
					s.release()
				}
			case upgradeMsg:
				m.step(s)
			case msgKill:
				if !s.killed {
					s.killed = true
					s.log.Warn("stopping every program immediately")
					s.shutdown(stopBackground)
					for _, p := range s.programs {
						p.post(evKill{})
					}
				}
			}
		}
	}
	s.final = s.inOrder()
}

// shutdown begins the final stop: nothing new (no watch fires, no build
// runs, no reload applies), then every program stops.
func (s *Supervisor) shutdown(stopBackground func()) {
	if s.stopping {
		return
	}
	if op := s.upgrading; op != nil {
		s.endUpgrade(op, ErrStopping) // thaws the programs before they stop
	}
	s.stopping = true
	s.health.leaving.Store(true)
	s.systemd.stopping()
	stopBackground()
	for _, p := range s.programs {
		p.post(evShutdown{})
	}
}

// post delivers a message to the loop, or reports false once it has
// ended.
func (s *Supervisor) post(m any) bool {
	select {
	case s.msgs <- m:
		return true
	case <-s.loopDone:
		return false
	}
}

// background runs f on a goroutine that Run waits for.
func (s *Supervisor) background(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

// startProgram starts p's goroutine.
func (s *Supervisor) startProgram(p *program) {
	if p.phase == phaseWaiting {
		s.waiting[p.name] = ""
	}
	s.live++
	go func() {
		p.run()
		s.ended <- p
	}()
}

// startBuilder starts a builder for p, built as base says.
func (s *Supervisor) startBuilder(p *program, base *config.Program) {
	ctx, cancel := context.WithCancel(s.runCtx)
	b := &builder{
		p: p, pool: s.pool, console: s.console, seq: &s.buildSeq, baseEnv: s.baseEnv,
		dir:  filepath.Join(s.file.Dir, config.DefaultBuildDir, p.name),
		log:  s.log.With("program", p.name),
		kick: make(chan struct{}, 1), base: base, stop: cancel,
	}
	s.builders[p.name] = b
	s.background(func() { b.run(ctx) })
}

// order returns the program names in config order, then the others
// sorted: programs left in the table but not in the file.
func (s *Supervisor) order() []string {
	var names []string
	for _, p := range s.file.Programs {
		if s.programs[p.Name] != nil {
			names = append(names, p.Name)
		}
	}
	var rest []string
	for n := range s.programs {
		if s.file.Program(n) == nil {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(names, rest...)
}

func (s *Supervisor) inOrder() []*program {
	var out []*program
	for _, n := range s.order() {
		out = append(out, s.programs[n])
	}
	return out
}

// Kill stops every program immediately: their process groups get SIGKILL.
// Run then returns ErrKilled once they were reaped.
func (s *Supervisor) Kill() {
	s.post(msgKill{})
}

// release starts each waiting program whose after list is there: every
// service in it serves, every one-shot completed. The others are told what
// they wait for.
func (s *Supervisor) release() {
	for name, told := range s.waiting {
		p, pc := s.programs[name], s.file.Program(name)
		if p == nil || pc == nil || s.stopping {
			delete(s.waiting, name)
			continue
		}
		var missing []string
		for _, a := range pc.After {
			st := s.deps[a]
			if !st.serving && !st.completed {
				why := st.why
				if why == "" {
					why = "not started"
				}
				missing = append(missing, a+" ("+why+")")
			}
		}
		if len(missing) == 0 {
			delete(s.waiting, name)
			s.log.Info("starting: what it starts after is there", "program", name, "after", strings.Join(pc.After, ","))
			p.post(evRelease{})
			continue
		}
		if reason := "waiting for " + strings.Join(missing, ", "); reason != told {
			s.waiting[name] = reason
			p.post(evWaitFor{reason})
			s.log.Debug("start order", "program", name, "state", reason)
		}
	}
}
