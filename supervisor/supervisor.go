package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/baton-run/baton/supervisor/control"

	"github.com/baton-run/baton/internal/watch"
	"github.com/baton-run/baton/supervisor/config"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Supervisor.
type Config struct {
	// File is the path of the config file. Default config.DefaultConfigFile.
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
}

// ErrKilled is returned by Run when a child had to be killed with SIGKILL
// while baton stopped, because it outlived its stop timeout or baton was
// told to stop immediately.
var ErrKilled = errors.New("supervisor: a child had to be killed")

// Supervisor runs the programs of a config file: it owns their listening
// sockets and hands them from each generation to the next.
//
// New, Run and the request methods (Reload, Status, Kill) are safe for
// concurrent use; Run is called once.
type Supervisor struct {
	cfg      Config
	file0    string       // the config file's absolute path
	dir      string       // and its directory
	log      hclog.Logger // baton's events
	outLog   hclog.Logger // the programs' output
	level    hclog.Level
	console  *console
	sockets  *sockets
	logFiles logFiles
	spawner  *spawner
	runDir   string
	baseEnv  []string

	mu       sync.Mutex
	file     *config.File
	programs map[string]*program
	loops    sync.WaitGroup
	running  bool
	stopping bool

	reloadMu sync.Mutex
	kill     chan struct{}
	killOnce sync.Once

	runCtx    context.Context // cancelled when Run begins to stop
	controlLn net.Listener    // nil when the control socket is off
	metricsLn net.Listener    // nil without a metrics block
	metrics   *metrics
	systemd   *systemd
	watcher   *watch.Watcher
	builders  map[string]*builder
	bg        sync.WaitGroup // builders and watch-triggered requests

	hookMu sync.Mutex
	hooks  []func(Event)
}

// Event is something that happened to a generation, for observers.
type Event struct {
	Program    string // the program's name
	What       string // "ready" or "exit"
	Generation int    // the generation it happened to
}

// New loads the config file and opens every listening socket. It returns
// a *ConfigError when the file does not validate, and an error naming the
// listener when a socket cannot be opened; nothing is left open then.
func New(cfg Config) (*Supervisor, error) {
	if cfg.File == "" {
		cfg.File = config.DefaultConfigFile
	}
	file, diags := config.Load(cfg.File)
	if diags.HasErrors() {
		return nil, &config.Error{Diags: diags}
	}
	var err error
	s := &Supervisor{
		cfg:      cfg,
		file:     file,
		sockets:  newSockets(),
		programs: map[string]*program{},
		builders: map[string]*builder{},
		kill:     make(chan struct{}),
		console:  &console{w: cfg.Console, color: cfg.Color, dir: file.Dir},
	}
	s.file0, _ = filepath.Abs(cfg.File)
	s.dir = file.Dir
	s.level = hclog.LevelFromString(file.Log.Level)
	s.log, s.outLog = cfg.Logger, nil
	if s.log == nil {
		var out io.Writer = os.Stderr
		if cfg.LogOutput != nil {
			out = cfg.LogOutput
		}
		if lf := file.Log.File; lf.Path != "" {
			// baton's log goes to its file, rotated, instead of stderr.
			out = s.logFiles.get(lf)
		}
		opts := func(level hclog.Level, name string) *hclog.LoggerOptions {
			return &hclog.LoggerOptions{Name: name, Level: level, Output: out, JSONFormat: file.Log.Format == "json"}
		}
		s.log = hclog.New(opts(s.devLevel(s.level, file), "baton"))
		s.outLog = hclog.New(opts(s.level, "baton.program"))
	} else {
		s.outLog = s.log.Named("program")
	}
	for _, d := range diags {
		s.log.Warn(config.FormatDiagnostic(d))
	}
	if s.systemd, err = takeSystemd(s.sockets); err != nil {
		return nil, err
	}
	s.baseEnv = cleanEnv(os.Environ())

	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	runDir, err := os.MkdirTemp(dir, "baton-")
	if err != nil {
		return nil, fmt.Errorf("create the runtime directory: %w", err)
	}
	// Searchable, not listable: programs that run as another user reach
	// their own notify socket in it.
	os.Chmod(runDir, 0o711)
	s.runDir = runDir

	socks := map[string][]*socket{}
	fail := func(err error) (*Supervisor, error) {
		for _, ss := range socks {
			s.sockets.releaseAll(ss)
		}
		if s.controlLn != nil {
			s.controlLn.Close()
		}
		if s.metricsLn != nil {
			s.metricsLn.Close()
		}
		os.RemoveAll(runDir)
		s.logFiles.closeAll()
		return nil, err
	}
	for _, p := range file.Programs {
		ss, err := s.sockets.acquireAll(p.Name, p.Listeners)
		if err != nil {
			return fail(fmt.Errorf("program %q: %w", p.Name, err))
		}
		socks[p.Name] = ss
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
	for _, p := range file.Programs {
		s.programs[p.Name] = newProgram(s, p, socks[p.Name])
		if s.building(p) {
			s.builders[p.Name] = newBuilder(s, p)
		}
	}
	return s, nil
}

// devLevel is the level of baton's own events: baton dev keeps them to
// warnings unless the config file sets a level, so that the terminal
// shows the cycles and the programs' output.
func (s *Supervisor) devLevel(level hclog.Level, f *config.File) hclog.Level {
	if s.cfg.Dev && !f.Log.LevelSet && level < hclog.Warn {
		return hclog.Warn
	}
	return level
}

// building reports whether p is built by baton dev.
func (s *Supervisor) building(p *config.Program) bool {
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

// Addr returns the bound address of a program's listener ("host:port",
// with the port of ":0" resolved, or "unix:/path"), or "" when there is
// no such listener.
func (s *Supervisor) Addr(program, listener string) string {
	s.mu.Lock()
	p := s.programs[program]
	s.mu.Unlock()
	if p == nil {
		return ""
	}
	st := p.statusNow()
	for _, l := range st.Listeners {
		if l.Name == listener {
			return l.Address
		}
	}
	return ""
}

// Run starts every program and supervises them until ctx is cancelled,
// then stops them all gracefully and returns once every child was reaped.
// It returns ErrKilled when a child had to be killed on the way.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.running = true
	s.spawner = newSpawner()
	runCtx, stopBackground := context.WithCancel(ctx)
	s.runCtx = runCtx
	for _, name := range s.order() {
		s.startLoop(s.programs[name])
	}
	for _, b := range s.builders {
		s.startBuilder(b)
	}
	s.watcher = watch.New(s.log, s.file.Watch.Poll)
	s.watcher.Set(s.watchTargetsLocked())
	if s.controlLn != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.serveControl(runCtx, s.controlLn)
		}()
	}
	if s.metricsLn != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.serveMetrics(s.metricsLn)
		}()
	}
	names := strings.Join(s.order(), ",")
	s.mu.Unlock()
	s.log.Info("baton started", "config", s.cfg.File, "programs", names, "pid", os.Getpid())

	select {
	case <-ctx.Done():
		s.log.Info("stopping every program", "reason", context.Cause(ctx))
	case <-s.kill:
		s.log.Warn("stopping every program immediately")
	}
	s.systemd.stopping()
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	// First nothing new: no watch fires, no build runs; then the programs
	// stop, which ends the requests still waiting on them.
	s.watcher.Close()
	stopBackground()
	s.mu.Lock()
	progs := make([]*program, 0, len(s.programs))
	for _, p := range s.programs {
		progs = append(progs, p)
	}
	s.mu.Unlock()
	for _, p := range progs {
		p.post(evStop{done: make(chan struct{})})
	}
	s.loops.Wait()
	s.bg.Wait()
	s.spawner.close()
	os.RemoveAll(s.runDir)
	for _, b := range s.builders {
		b.cleanup()
	}
	s.logFiles.closeAll()

	killed := false
	for _, p := range progs {
		killed = killed || p.killedStopping
	}
	if killed {
		s.log.Warn("baton stopped; a child had to be killed")
		return ErrKilled
	}
	s.log.Info("baton stopped")
	return nil
}

// Kill stops every program immediately: their process groups get SIGKILL.
// Run then returns ErrKilled once they were reaped.
func (s *Supervisor) Kill() {
	s.killOnce.Do(func() {
		s.mu.Lock()
		for _, p := range s.programs {
			go p.post(evKill{})
		}
		s.mu.Unlock()
		close(s.kill)
	})
}

func (s *Supervisor) startBuilder(b *builder) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		b.run(s.runCtx)
	}()
}

func (s *Supervisor) startLoop(p *program) {
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		p.run()
	}()
}

// order returns the program names in file order. Call with s.mu held.
func (s *Supervisor) order() []string {
	var names []string
	seen := map[string]bool{}
	for _, p := range s.file.Programs {
		if s.programs[p.Name] != nil {
			names = append(names, p.Name)
			seen[p.Name] = true
		}
	}
	var rest []string
	for n := range s.programs {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(names, rest...)
}

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

// Reload re-reads the config file and applies it: programs added are
// started, programs removed are stopped, and the others are handed over
// to a new generation with their new config, every one of them when
// explicit is set (SIGHUP, baton reload), only the changed ones otherwise.
// With names, only those programs are handed over.
//
// It is all or nothing: when the file does not validate or a new listener
// cannot be opened, nothing changes and the error says why. Reload
// returns when every handover has ended, with one control.Result per program
// handed over; its error joins the rollbacks.
func (s *Supervisor) Reload(ctx context.Context, explicit bool, reason string, names ...string) ([]control.Result, error) {
	// Reloads are read and dispatched one at a time; their handovers run
	// in the programs, which merge the requests that arrive during one.
	s.reloadMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.reloadMu.Unlock()
		}
	}()
	if explicit && len(names) == 0 {
		s.systemd.reloading()
		defer s.systemd.reloaded()
	}
	file, diags := config.Load(s.cfg.File)
	if diags.HasErrors() {
		s.log.Error("config not applied; every program keeps running as it was", "reason", reason)
		for _, d := range diags {
			s.log.Error(config.FormatDiagnostic(d))
		}
		return nil, &config.Error{Diags: diags}
	}
	for _, d := range diags {
		s.log.Warn(config.FormatDiagnostic(d))
	}
	for _, n := range names {
		if file.Program(n) == nil {
			return nil, fmt.Errorf("no program named %q in %s", n, s.cfg.File)
		}
	}

	s.mu.Lock()
	if s.stopping || !s.running {
		s.mu.Unlock()
		return nil, ErrStopping
	}
	// Every socket first: a listener that cannot be opened fails the
	// whole reload before anything changed.
	socks := map[string][]*socket{}
	for _, p := range file.Programs {
		if len(names) > 0 && !contains(names, p.Name) {
			continue
		}
		ss, err := s.sockets.acquireAll(p.Name, p.Listeners)
		if err != nil {
			for _, ss := range socks {
				s.sockets.releaseAll(ss)
			}
			s.mu.Unlock()
			err = fmt.Errorf("program %q: %w", p.Name, err)
			s.log.Error("config not applied; every program keeps running as it was", "error", err)
			return nil, err
		}
		socks[p.Name] = ss
	}
	type job struct {
		p *program
		h *handover
	}
	var jobs []job
	var removed []*program
	for _, pc := range file.Programs {
		ss, ok := socks[pc.Name]
		if !ok {
			continue
		}
		run := pc
		if b := s.builders[pc.Name]; b != nil {
			if !s.building(pc) {
				// The build block went: run the binary it names.
				delete(s.builders, pc.Name)
			} else {
				b.setBase(pc)
				if run = b.runConfig(); run == nil {
					// Nothing built yet: the first good build starts it.
					s.sockets.releaseAll(ss)
					continue
				}
			}
		}
		if p := s.programs[pc.Name]; p != nil {
			jobs = append(jobs, job{p, &handover{reason: reason, explicit: explicit, cfg: run, socks: ss}})
			if s.building(pc) && s.builders[pc.Name] == nil {
				b := newBuilder(s, pc)
				s.builders[pc.Name] = b
				s.startBuilder(b)
			}
			continue
		}
		p := newProgram(s, pc, ss)
		s.programs[pc.Name] = p
		s.log.Info("program added", "program", pc.Name)
		s.startLoop(p)
		if s.building(pc) {
			b := newBuilder(s, pc)
			s.builders[pc.Name] = b
			s.startBuilder(b)
		}
	}
	if len(names) == 0 {
		for name, p := range s.programs {
			if file.Program(name) == nil {
				delete(s.programs, name)
				delete(s.builders, name)
				removed = append(removed, p)
			}
		}
	}
	if file.Control != s.file.Control {
		s.log.Warn("the control block changed; restart baton to apply it", "socket", s.file.Control.Socket)
	}
	if file.Metrics != s.file.Metrics {
		s.log.Warn("the metrics block changed; restart baton to apply it", "address", s.file.Metrics.Address)
	}
	file.Control, file.Metrics = s.file.Control, s.file.Metrics
	s.file = file
	s.watcher.Set(s.watchTargetsLocked())
	s.mu.Unlock()

	if lv := hclog.LevelFromString(file.Log.Level); lv != s.level && s.cfg.Logger == nil {
		s.level = lv
		s.log.SetLevel(s.devLevel(lv, file))
		s.outLog.SetLevel(lv)
	}
	var wg sync.WaitGroup
	posted := make(chan struct{}, len(jobs))
	for _, p := range removed {
		s.log.Info("program removed: stopping it", "program", p.name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.post(evStop{done: make(chan struct{})})
			<-p.quit
		}()
	}
	results := make([]control.Result, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := resultOf(j.p.name, j.p.request(j.h, posted))
			if r.Stopped {
				// Not a failure of the reload: a stopped program takes
				// its new config when it starts.
				r.Err, r.Error = nil, ""
			}
			results[i] = r
		}()
	}
	for range jobs {
		<-posted
	}
	s.reloadMu.Unlock()
	locked = false
	wg.Wait()
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Program, r.Err))
		}
	}
	return results, errors.Join(errs...)
}

// Restart hands program name over to a new generation with its current
// config: a zero-downtime restart. It returns when the new generation is
// ready or was rolled back.
func (s *Supervisor) Restart(name string) (control.Result, error) {
	p := s.program(name)
	if p == nil {
		return control.Result{}, fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	r := resultOf(name, p.request(&handover{reason: "restart requested", explicit: true}, nil))
	return r, r.Err
}

// Stop stops every generation of program name and returns once they all
// exited. The program keeps its sockets (clients wait in the accept queue)
// and its config; Start starts it again.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	p := s.program(name)
	if p == nil {
		return fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	done := make(chan struct{})
	p.post(evPause{done})
	select {
	case <-done:
		return nil
	case <-p.quit:
		return ErrStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start starts program name after Stop, or after its restart policy left
// it down, and returns when it is ready or failed to start.
func (s *Supervisor) Start(name string) (control.Result, error) {
	p := s.program(name)
	if p == nil {
		return control.Result{}, fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	reply := make(chan handoverResult, 1)
	h := &handover{reason: "start requested", explicit: true, replies: []chan handoverResult{reply}}
	select {
	case p.events <- evResume{h}:
	case <-p.quit:
		return control.Result{Program: name, Err: ErrStopping, Error: ErrStopping.Error()}, ErrStopping
	}
	r := resultOf(name, <-reply)
	return r, r.Err
}

// ErrNoProgram: no program has that name.
var ErrNoProgram = errors.New("supervisor: no such program")

// Logs returns up to n of program name's last output lines (all kept when
// n <= 0).
func (s *Supervisor) Logs(name string, n int) ([]LogLine, error) {
	p := s.program(name)
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	return p.ring.last(n), nil
}

// Follow returns program name's last n output lines and a channel of the
// lines that follow; stop ends it and reports how many lines a slow
// reader lost.
func (s *Supervisor) Follow(name string, n int) (backlog []LogLine, lines <-chan LogLine, stop func() int, err error) {
	p := s.program(name)
	if p == nil {
		return nil, nil, nil, fmt.Errorf("%w: %q", ErrNoProgram, name)
	}
	backlog, lines, stop = p.ring.follow(n)
	return backlog, lines, stop, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// program returns the running program called name, or nil.
func (s *Supervisor) program(name string) *program {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.programs[name]
}

// observe tells the observers about an event.
func (s *Supervisor) observe(program, what string, gen int) {
	e := Event{Program: program, What: what, Generation: gen}
	s.systemd.observe(s, e)
	s.hookMu.Lock()
	hooks := s.hooks
	s.hookMu.Unlock()
	for _, h := range hooks {
		h(e)
	}
}

// Observe registers f to be called, from the program's goroutine, for
// every generation that becomes ready or exits. f must not block.
func (s *Supervisor) Observe(f func(Event)) {
	s.hookMu.Lock()
	s.hooks = append(s.hooks, f)
	s.hookMu.Unlock()
}

// watchTargetsLocked lists what to watch for the current config: the
// config file, each program's binary (baton run) or sources (baton dev),
// and the paths its watch block adds. Call with s.mu held.
func (s *Supervisor) watchTargetsLocked() []*watch.Target {
	f := s.file
	if !f.Watch.Enabled {
		return nil
	}
	var ts []*watch.Target
	if f.Watch.Config {
		ts = append(ts, &watch.Target{Path: s.file0, Content: true, Debounce: f.Watch.Debounce, Fire: func([]string) {
			s.background(func() { s.Reload(s.runCtx, false, "config file changed") })
		}})
	}
	for _, pc := range f.Programs {
		if !pc.Watch.Enabled {
			continue
		}
		name := pc.Name
		if b := s.builders[name]; b != nil {
			for _, w := range pc.Build.Watch {
				ts = append(ts, &watch.Target{Path: w, Tree: true, Include: pc.Build.Include, Exclude: pc.Build.Exclude,
					Debounce: f.Watch.Debounce, Fire: b.trigger})
			}
		} else if strings.Contains(pc.Command[0], "/") {
			ts = append(ts, &watch.Target{Path: pc.Command[0], Content: true, Debounce: f.Watch.Debounce, Fire: func([]string) {
				s.watchHandover(name, "binary changed", false)
			}})
		}
		for _, path := range pc.Watch.Paths {
			ts = append(ts, &watch.Target{Path: path, Auto: true, Debounce: f.Watch.Debounce, Fire: func(changed []string) {
				// The binary and config may be the same as what serves:
				// the change is in these files, so it is always handed over.
				s.watchHandover(name, s.console.describe(changed), true)
			}})
		}
	}
	return ts
}

// watchHandover hands program name over because a watched file changed.
func (s *Supervisor) watchHandover(name, reason string, explicit bool) {
	s.background(func() {
		p := s.program(name)
		if p == nil {
			return
		}
		s.log.Info("change noticed: handing over", "program", name, "reason", reason)
		p.request(&handover{reason: reason, explicit: explicit}, nil)
	})
}

// background runs f in a goroutine that Run waits for, unless Run is
// already stopping.
func (s *Supervisor) background(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}
