package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/reaper"
	"github.com/baton-run/baton/supervisor/config"

	"github.com/hashicorp/go-hclog"
)

// builder rebuilds one program for baton dev and hands it over after
// every good build. A change that arrives during a build cancels it (the
// build's process group is killed) and starts a new one; each build writes
// its binary to a fresh path, so no build ever writes over a binary that
// runs; a failed build leaves the serving generation serving.
//
// Its goroutine, run, builds; each good build's handover waits on a
// goroutine of its own, so that a change during a slow start-up is built
// meanwhile. The fields under mu are shared by these, the watcher
// (trigger) and the supervisor's loop (setBase, runConfig).
type builder struct {
	p       *program
	pool    *socketPool
	console *console
	seq     *atomic.Int64 // numbers the builds of every builder
	baseEnv []string
	dir     string // where its builds go: one directory each
	log     hclog.Logger
	kick    chan struct{} // a build is wanted
	stop    func()        // ends run; it removes its binaries
	wg      sync.WaitGroup

	mu      sync.Mutex
	base    *config.Program // the program as the config file declares it
	changed []string        // paths changed since the last build started
	cancel  context.CancelFunc
	good    string   // the binary of the serving generation
	outputs []output // binaries written and not removed yet, oldest first
	started bool     // the first handover was requested
}

// output is a binary a build wrote; n orders the builds.
type output struct {
	n    int64
	path string
}

// trigger asks for a build because of changed, cancelling a build under
// way.
func (b *builder) trigger(changed []string) {
	b.mu.Lock()
	b.changed = append(b.changed, changed...)
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// setBase takes a reloaded config; a changed build block means a rebuild.
func (b *builder) setBase(p *config.Program) {
	b.mu.Lock()
	rebuild := fmt.Sprintf("%+v", *b.base.Build) != fmt.Sprintf("%+v", *p.Build)
	b.base = p
	b.mu.Unlock()
	if rebuild {
		b.trigger([]string{"the build block"})
	}
}

// runConfig returns the program's config for the current good binary, or
// nil when no build succeeded yet.
func (b *builder) runConfig() *config.Program {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.good == "" {
		return nil
	}
	return b.base.WithBinary(b.good)
}

// run builds when asked until ctx ends, then removes what it built; the
// first build starts at once.
func (b *builder) run(ctx context.Context) {
	defer b.cleanup()
	defer b.wg.Wait()
	b.trigger(nil)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		b.mu.Lock()
		changed, base := b.changed, b.base
		b.changed = nil
		n := b.seq.Add(1)
		bctx, cancel := context.WithCancel(ctx)
		b.cancel = cancel
		first := !b.started
		b.mu.Unlock()

		out := output{n: n, path: filepath.Join(b.dir, strconv.FormatInt(n, 10), filepath.Base(base.Command[0]))}
		if first {
			b.console.cycle(b.p.name, nil, true, "building (a first build compiles every dependency: it can take a minute)", "")
		}
		start := time.Now()
		text, err := b.build(bctx, base.Build, out.path)
		took := time.Since(start)
		b.mu.Lock()
		cancelled := bctx.Err() != nil
		b.cancel = nil
		b.mu.Unlock()
		cancel()
		switch {
		case ctx.Err() != nil:
			os.RemoveAll(filepath.Dir(out.path))
			return
		case cancelled:
			// A newer change cancelled it: its paths go with the next build.
			os.RemoveAll(filepath.Dir(out.path))
			b.mu.Lock()
			b.changed = append(changed, b.changed...)
			b.mu.Unlock()
			b.log.Info("build cancelled by a newer change")
			continue
		case err != nil:
			os.RemoveAll(filepath.Dir(out.path))
			b.log.Warn("build failed; the serving generation keeps serving", "error", err)
			b.console.cycle(b.p.name, changed, false, fmt.Sprintf("build failed in %s; %s", round(took), b.serving()), strings.TrimRight(string(text), "\n"))
			continue
		}
		b.mu.Lock()
		b.outputs = append(b.outputs, out)
		b.started = true
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.handover(changed, took, out, base, first)
		}()
	}
}

// serving describes what serves while a build failed.
func (b *builder) serving() string {
	if st := b.p.statusNow(); st.Generation > 0 {
		return fmt.Sprintf("gen %d keeps serving", st.Generation)
	}
	return "nothing serves yet: fix the build"
}

// build runs the build command with output in place of config.OutputToken.
func (b *builder) build(ctx context.Context, bc *config.BuildConfig, output string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(output), 0o755); err != nil {
		return nil, err
	}
	argv := make([]string, len(bc.Command))
	for i, a := range bc.Command {
		argv[i] = strings.ReplaceAll(a, config.OutputToken, output)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = bc.Dir
	cmd.Env = buildEnv(b.baseEnv, bc.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A build is a tree of processes (go build runs the compiler and
	// linker): cancel kills the whole group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	b.log.Debug("building", "command", strings.Join(argv, " "))
	out, err := reaper.CombinedOutput(cmd) // an own child: the orphan reaper leaves it alone
	if err != nil {
		return out, fmt.Errorf("%s: %w", argv[0], err)
	}
	if st, err := os.Stat(output); err != nil || st.IsDir() {
		return out, fmt.Errorf("the build succeeded but wrote no binary to %s (%s)", output, config.OutputToken)
	}
	return out, nil
}

// handover hands the program over to a built binary and reports the cycle.
func (b *builder) handover(changed []string, took time.Duration, out output, base *config.Program, first bool) {
	cfg := base.WithBinary(out.path)
	l, err := b.pool.acquire(b.p.name, cfg.Listeners)
	if err != nil {
		b.forget(out)
		b.console.cycle(b.p.name, changed, false, fmt.Sprintf("built in %s; cannot open the listeners: %v", round(took), err), "")
		return
	}
	res := b.p.request(&request{reason: "build", force: first, cfg: cfg, lease: l})
	built := "built in " + round(took)
	switch {
	case res.Err == nil:
		b.served(res.Binary)
		b.console.cycle(b.p.name, changed, true, fmt.Sprintf("%s · ready in %s · gen %d serving", built, round(res.ReadyIn), res.Gen), "")
	case errors.Is(res.Err, ErrUnchanged):
		b.forget(out)
		b.console.cycle(b.p.name, changed, true, built+" · same binary, nothing to hand over", "")
	case errors.Is(res.Err, ErrStopping):
		b.forget(out)
	default:
		b.forget(out)
		why := strings.TrimPrefix(strings.TrimPrefix(res.Err.Error(), ErrRolledBack.Error()+": "), ErrStartFailed.Error()+": ")
		keeps := "nothing serves yet"
		if res.Gen > 0 {
			keeps = fmt.Sprintf("gen %d keeps serving", res.Gen)
		}
		b.console.cycle(b.p.name, changed, false, fmt.Sprintf("%s · failed to start (%s); %s", built, why, keeps), "")
	}
}

// served records that binary serves now. The binaries of older builds
// are no longer needed (a generation still draining keeps running from
// its deleted file); newer ones may still be waiting for their handover.
// A request merged with a newer one is answered with the newer binary,
// which is why the binary comes from the result, not from the build.
// Each handover is answered on a goroutine of its own, so the answers
// may come out of order: one for a binary that a newer build's answer
// removed already is late, and changes nothing.
func (b *builder) served(binary string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64 = -1
	for _, o := range b.outputs {
		if o.path == binary {
			n = o.n
		}
	}
	if n < 0 && b.good != "" {
		return
	}
	b.good = binary
	keep := b.outputs[:0]
	for _, o := range b.outputs {
		if o.n >= n {
			keep = append(keep, o)
		} else {
			os.RemoveAll(filepath.Dir(o.path))
		}
	}
	b.outputs = keep
}

// forget removes a binary that does not run, unless it serves.
func (b *builder) forget(out output) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if out.path == b.good {
		return
	}
	for i, o := range b.outputs {
		if o == out {
			b.outputs = append(b.outputs[:i], b.outputs[i+1:]...)
			os.RemoveAll(filepath.Dir(o.path))
			return
		}
	}
}

// cleanup removes every binary the builder wrote, once it stopped: its
// program stopped too, or left baton dev.
func (b *builder) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, o := range b.outputs {
		os.RemoveAll(filepath.Dir(o.path))
	}
	b.outputs = nil
	os.Remove(b.dir) // only when empty: another builder of the same name may use it
	b.log.Debug("builder stopped; its binaries were removed")
}

// buildEnv is a build's environment: baton's, then the build block's.
// config.DefaultBuildGoFlags joins GOFLAGS unless the build block sets
// GOFLAGS or GOFLAGS already sets -ldflags.
func buildEnv(base, block []string) []string {
	env := append(append([]string(nil), base...), block...)
	for _, kv := range block {
		if strings.HasPrefix(kv, "GOFLAGS=") {
			return env
		}
	}
	for i, kv := range env {
		if flags, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			if !strings.Contains(flags, "-ldflags") {
				env[i] = strings.TrimSpace("GOFLAGS=" + flags + " " + config.DefaultBuildGoFlags)
			}
			return env
		}
	}
	return append(env, "GOFLAGS="+config.DefaultBuildGoFlags)
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.String()
}

// console prints baton dev's human output: one line per cycle.
type console struct {
	mu    sync.Mutex
	w     io.Writer // nil: no output
	color bool
	dir   string // paths are shown relative to it
}

const (
	ansiReset = "\x1b[0m"
	ansiBold  = "\x1b[1m"
	ansiGreen = "\x1b[32m"
	ansiRed   = "\x1b[31m"
	ansiDim   = "\x1b[2m"
)

// cycle prints "15:04:05 name  what changed · result", and detail, the
// compiler's output, as it is below.
func (c *console) cycle(name string, changed []string, ok bool, result, detail string) {
	if c == nil || c.w == nil {
		return
	}
	what := c.describe(changed)
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := time.Now().Format("15:04:05")
	if c.color {
		col := ansiGreen
		if !ok {
			col = ansiRed
		}
		fmt.Fprintf(c.w, "%s%s%s %s%s%s  %s · %s%s%s\n", ansiDim, ts, ansiReset, ansiBold, name, ansiReset, what, col, result, ansiReset)
	} else {
		fmt.Fprintf(c.w, "%s %s  %s · %s\n", ts, name, what, result)
	}
	if detail != "" {
		fmt.Fprintln(c.w, detail)
	}
}

func (c *console) describe(changed []string) string {
	if len(changed) == 0 {
		return "start"
	}
	seen := map[string]bool{}
	var names []string
	for _, p := range changed {
		if rel, err := filepath.Rel(c.dir, p); err == nil && !strings.HasPrefix(rel, "..") {
			p = rel
		}
		if !seen[p] {
			seen[p] = true
			names = append(names, p)
		}
	}
	if len(names) > 2 {
		return fmt.Sprintf("%s, %s and %d more changed", names[0], names[1], len(names)-2)
	}
	return strings.Join(names, ", ") + " changed"
}
