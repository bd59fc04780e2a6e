package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/harness"
	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/procfs"
	"golang.org/x/sys/unix"
)

// The peers' versions, as bench/peers/go.mod and bench/peers/air/go.mod
// pin them (a test checks that they agree).
const (
	tableflipVersion = "v1.2.3"
	overseerVersion  = "v1.1.6"
	airVersion       = "v1.67.4"
)

// peerSystem is one way of running, and restarting, the peers' app.
type peerSystem struct {
	name    string
	version string // of the peer; empty for baton and the app alone
	trigger string // what the harness does for a restart
}

// peerSystems lists the -peers mode in its order: direct first, since the
// others are measured against it.
func peerSystems() []peerSystem {
	return []peerSystem{
		{"direct", "", "none: the app alone, never restarted"},
		{"baton", "", "SIGHUP to baton"},
		{"tableflip", tableflipVersion, "SIGHUP to the serving process"},
		{"tableflip-drain", tableflipVersion, "SIGHUP to the serving process"},
		{"overseer", overseerVersion, "SIGUSR2 to the master process"},
		{"air", airVersion, "a one-line change to main.go, written in place"},
	}
}

// validPeer reports whether name is a system of -peers, or of -devloop
// when dev.
func validPeer(name string, dev bool) bool {
	if dev {
		return contains(devSystemNames, name) || strings.HasPrefix(name, "baton-dev-")
	}
	for _, s := range peerSystems() {
		if s.name == name {
			return true
		}
	}
	return false
}

// peerRequest is the load's request in the -peers mode: the app's one
// route, a small JSON answer.
const peerRequest = "GET /"

// peerBins are the binaries of the peers' apps, built from bench/peers.
type peerBins struct {
	src                                      string // bench/peers
	plain, tableflip, drain, overseer, baton string
	air                                      string // empty unless built
}

// buildPeers builds the peers' apps, and air when withAir, from the
// nested modules under bench/peers, which pin the peers' versions; the Go
// toolchain fetches them through the module proxy the first time.
func buildPeers(ctx context.Context, e *env, withAir bool) (*peerBins, error) {
	src := filepath.Join(e.root, "bench", "peers")
	bin := filepath.Join(e.work, "bin", "peers")
	b := &peerBins{src: src,
		plain: filepath.Join(bin, "plainapp"), tableflip: filepath.Join(bin, "tableflipapp"), drain: filepath.Join(bin, "drainapp"),
		overseer: filepath.Join(bin, "overseerapp"), baton: filepath.Join(bin, "batonapp")}
	e.logf("building the peers' apps from %s", src)
	start := time.Now()
	if err := goBuild(ctx, src, "-o", bin+string(filepath.Separator), "./plainapp", "./tableflipapp", "./drainapp", "./overseerapp", "./batonapp"); err != nil {
		return nil, err
	}
	if withAir {
		b.air = filepath.Join(bin, "air")
		if err := goBuild(ctx, filepath.Join(src, "air"), "-o", b.air, "github.com/air-verse/air"); err != nil {
			return nil, err
		}
	}
	e.logf("built in %v", time.Since(start).Round(100*time.Millisecond))
	return b, nil
}

func goBuild(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", dir, err, out)
	}
	return nil
}

// copyPeerModule lays out, in dst, a module of its own that builds the
// peers' app as main package from mainDir (plainapp, batonapp): what air
// and baton dev build, and what the one-line change edits. Its go.mod is
// bench/peers/go.mod with baton's replace made absolute.
func copyPeerModule(src, root, dst, mainDir string) error {
	if err := os.MkdirAll(filepath.Join(dst, "app"), 0o755); err != nil {
		return err
	}
	mod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return err
	}
	mod = []byte(strings.Replace(string(mod), "=> ../..", "=> "+root, 1))
	files := map[string][]byte{"go.mod": mod}
	for to, from := range map[string]string{"go.sum": "go.sum", "app/app.go": "app/app.go", "main.go": filepath.Join(mainDir, "main.go")} {
		b, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			return err
		}
		files[to] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// editLine is the line of each app's main.go that the one-line change
// rewrites.
var editLine = regexp.MustCompile(`(?m)^const edit = .*$`)

// edit makes the one-line change: main.go's edit constant becomes label,
// written in place as an editor saves.
func edit(mainGo, label string) error {
	b, err := os.ReadFile(mainGo)
	if err != nil {
		return err
	}
	if !editLine.Match(b) {
		return fmt.Errorf("%s: no line %q to change", mainGo, "const edit = …")
	}
	b = editLine.ReplaceAll(b, []byte(fmt.Sprintf("const edit = %q // the benchmark's one-line change rewrites this line", label)))
	return os.WriteFile(mainGo, b, 0o644)
}

// pidAnswer is GET /pid: which process answered, with which source.
type pidAnswer struct {
	PID  int    `json:"pid"`
	Edit string `json:"edit"`
	// When (app.Mono) the process was initialised and began and ended
	// its start-up.
	Init    int64   `json:"init"`
	Startup []int64 `json:"startup"`
	At      int64   `json:"at"` // when (app.Mono) it answered
}

// probePID asks GET /pid on a new connection, so that the answer comes
// from whichever process accepts now.
func probePID(ctx context.Context, c *http.Client, addr string) (pidAnswer, error) {
	var a pidAnswer
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/pid", nil)
	resp, err := c.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("/pid: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&a)
	return a, err
}

// served is what waitServed saw between a trigger and the first answer
// of the new process.
type served struct {
	at      time.Time     // the answer that accept took was received
	answer  pidAnswer     // of those accept took, the one answered first (answer.At)
	refused time.Duration // probes failed: from each failure to the next answer, summed
	failed  int           // probes that failed
}

// probeEvery is how often a probe starts, on time, whether the ones
// before have their answers or not. Probes that each waited for the
// answer to the one before, then 1 ms, started every 1.5 to 3 ms under
// the load (most probes take 0.5 to 2 ms then), so they came back to a
// new process that had begun to accept about 1 ms late on average, as
// much as the systems differ by; a system whose new process finds a probe
// already waiting in the listen queue (overseer's: nobody accepts
// during its start-up) never paid that delay. On time, it is 0.5 ms on
// average for every system. Every 0.5 ms was tried too: the probes
// took enough CPU to slow baton's way to the new process (BENCH.md, "A
// ninth look").
const probeEvery = time.Millisecond

// maxProbes bounds the probes under way: a probe is skipped while that
// many wait for their answers.
const maxProbes = 64

// probe starts GET /pid on a new connection every `every`, not waiting
// for the answers of the ones before (see probeEvery), until stop is
// closed, and gives seen each one's start, end and outcome; seen is
// called from many goroutines at once. It returns once every probe
// it started has ended.
func probe(ctx context.Context, addr string, every time.Duration, stop <-chan struct{}, seen func(start, end time.Time, a pidAnswer, err error)) {
	c := newHealthClient()
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxProbes)
	next := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)): // the probes' cadence, not a synchronisation
		}
		next = next.Add(every)
		if now := time.Now(); next.Before(now) {
			next = now // late: the next one at once, not a burst
		}
		select {
		case slots <- struct{}{}:
		default:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			start := time.Now()
			a, err := probePID(ctx, c, addr)
			seen(start, time.Now(), a, err)
		}()
	}
}

// waitServed probes GET /pid, a new connection every `every`, until an
// answer is one accept takes, and measures meanwhile how long the
// address answered nothing. The probes under way then are waited for: of
// the answers accept takes, the one the server gave first
// (pidAnswer.At) is the result.
func waitServed(ctx context.Context, addr string, timeout, every time.Duration, accept func(pidAnswer) bool) (served, error) {
	var (
		mu    sync.Mutex
		s     served
		found bool
		down  time.Time // the first failed probe since the last answer
		last  string    // the last probe's outcome, for the error
	)
	stop := make(chan struct{}) // closed at the first answer accept takes, or the timeout
	var once sync.Once
	timer := time.AfterFunc(timeout, func() { once.Do(func() { close(stop) }) })
	defer timer.Stop()
	probe(ctx, addr, every, stop, func(start, end time.Time, a pidAnswer, err error) {
		mu.Lock()
		defer mu.Unlock()
		last = fmt.Sprintf("%+v, %v", a, err)
		if err != nil {
			s.failed++
			if down.IsZero() || start.Before(down) {
				down = start
			}
			return
		}
		if !down.IsZero() {
			s.refused += end.Sub(down)
			down = time.Time{}
		}
		if !accept(a) {
			return
		}
		if !found || (a.At > 0 && a.At < s.answer.At) {
			s.at, s.answer = end, a
		}
		found = true
		once.Do(func() { close(stop) })
	})
	switch {
	case found:
		return s, nil
	case ctx.Err() != nil:
		return s, ctx.Err()
	}
	return s, fmt.Errorf("no new process answered on %s within %v (last: %s)", addr, timeout, last)
}

// alive reports whether pid is a process that has not exited: a zombie
// counts as gone, since a process that outlived its parent is reaped by
// whoever adopted it, perhaps late.
func alive(pid int) bool { return procfs.Alive(pid) }

// waitExited waits until pid is gone, up to timeout.
func waitExited(ctx context.Context, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still runs after %v", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond): // polling the kernel, not synchronising
		}
	}
	return nil
}

// peerTarget runs the app under one system.
type peerTarget interface {
	// restart sends the trigger, with cur the pid that serves, and
	// returns at once.
	restart(cur int) error
	// settle waits, untimed, until the next trigger can work: for
	// tableflip the old process must be gone before another upgrade.
	settle(ctx context.Context, old int) error
	// stop stops gracefully, cur being the pid that serves.
	stop(cur int) error
	// kill ends whatever still runs.
	kill()
}

// startPeer starts sys on addr in dir, and returns once it serves.
func startPeer(ctx context.Context, e *env, bins *peerBins, sys peerSystem, dir, addr string) (peerTarget, error) {
	env := harness.ChildEnv("PEER_ADDR=" + addr)
	log := filepath.Join(dir, sys.name+".log")
	switch sys.name {
	case "direct":
		p, err := startProc(bins.plain, nil, dir, env, log)
		return &groupPeer{p: p}, err
	case "tableflip", "tableflip-drain":
		bin := bins.tableflip
		if sys.name == "tableflip-drain" {
			bin = bins.drain
		}
		p, err := startProc(bin, nil, dir, env, log)
		return &groupPeer{p: p, signal: syscall.SIGHUP, toServing: true, settles: true}, err
	case "overseer":
		p, err := startProc(bins.overseer, nil, dir, env, log)
		return &groupPeer{p: p, signal: syscall.SIGUSR2}, err
	case "baton":
		cfg := fmt.Sprintf(`log {
  level  = "info"
  format = "text"
}
watch { enabled = false }
program "app" {
  command = [%q]
  listener "http" { address = %q }
  ready { timeout = "60s" }
  stop { timeout = "30s" }
}
`, bins.baton, addr)
		b, err := startBatonConfig(ctx, e, dir, cfg, "", []string{"app"})
		if err != nil {
			return nil, err
		}
		return &batonPeer{b: b}, nil
	case "air":
		return startAir(ctx, bins, filepath.Join(dir, "src"), "plainapp", env, log)
	}
	return nil, fmt.Errorf("no system %q", sys.name)
}

// groupPeer is a system the harness starts as one process in a process
// group of its own, which every process it starts stays in: the app
// alone, tableflip (the serving process changes with each upgrade) and
// overseer (a master and its children).
type groupPeer struct {
	p         *proc
	signal    syscall.Signal // the trigger; 0: never restarted
	toServing bool           // signal the serving process, not the first one
	settles   bool           // wait for the old process to exit before the next trigger
}

func (g *groupPeer) restart(cur int) error {
	if g.signal == 0 {
		return errors.New("never restarted")
	}
	pid := g.p.pid
	if g.toServing {
		pid = cur
	}
	return syscall.Kill(pid, g.signal)
}

func (g *groupPeer) settle(ctx context.Context, old int) error {
	if !g.settles {
		return nil
	}
	if err := waitExited(ctx, old, exitTimeout); err != nil {
		return err
	}
	if old != g.p.pid {
		reap(old)
	}
	return nil
}

func (g *groupPeer) stop(cur int) error {
	pid := g.p.pid
	if g.toServing {
		pid = cur
	}
	syscall.Kill(pid, syscall.SIGTERM)
	err := waitExited(context.Background(), pid, exitTimeout)
	g.kill()
	return err
}

// kill ends the group: whatever the processes started, the first one
// included, and reaps them.
func (g *groupPeer) kill() {
	syscall.Kill(-g.p.pid, syscall.SIGKILL)
	<-g.p.done
	reapGroup(g.p.pid)
}

// The processes that outlive their parent (tableflip's, after each
// upgrade; overseer's children when the master exits first) are adopted
// by the harness while the -peers mode runs: their CPU time then counts
// as the harness's, not as other work on the machine, and the harness
// reaps them.
func adoptOrphans(on bool) {
	v := 0
	if on {
		v = 1
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, uintptr(v), 0, 0, 0)
}

// reap collects the exit status of an adopted process that has exited;
// nothing happens to one that is not the harness's child.
func reap(pid int) {
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// reapGroup waits, up to killTimeout, for the processes of group pgid to
// exit, and reaps those the harness adopted.
func reapGroup(pgid int) {
	deadline := time.Now().Add(killTimeout)
	for {
		pids := groupMembers(pgid)
		left := 0
		for _, pid := range pids {
			if alive(pid) {
				left++
			} else {
				reap(pid)
			}
		}
		if left == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond) // polling the kernel, not synchronising
	}
}

// groupMembers lists the processes of group pgid, from /proc.
func groupMembers(pgid int) []int {
	all, _ := procfs.All()
	var out []int
	for _, st := range all {
		if st.PGRP == pgid {
			out = append(out, st.PID)
		}
	}
	return out
}

// batonPeer is baton run with the app as its one program.
type batonPeer struct{ b *batonTarget }

func (p *batonPeer) restart(int) error { return p.b.p.cmd.Process.Signal(syscall.SIGHUP) }

func (p *batonPeer) settle(ctx context.Context, old int) error {
	return waitExited(ctx, old, exitTimeout)
}

func (p *batonPeer) stop(int) error {
	_, err := p.b.stop()
	return err
}

func (p *batonPeer) kill() { p.b.kill() }

// airPeer is air in a copy of the app's module, with the .air.toml that
// air init writes: every setting at its default.
type airPeer struct {
	p      *proc
	mainGo string
	n      int
	label  string // the edit of the last change
}

func startAir(ctx context.Context, bins *peerBins, dir, mainDir string, env []string, log string) (*airPeer, error) {
	if err := copyPeerModule(bins.src, filepath.Dir(filepath.Dir(bins.src)), dir, mainDir); err != nil {
		return nil, fmt.Errorf("air: %w", err)
	}
	cmd := exec.CommandContext(ctx, bins.air, "init")
	cmd.Dir, cmd.Env = dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("air init: %w\n%s", err, out)
	}
	p, err := startProc(bins.air, nil, dir, env, log)
	if err != nil {
		return nil, err
	}
	return &airPeer{p: p, mainGo: filepath.Join(dir, "main.go")}, nil
}

func (a *airPeer) restart(int) error {
	a.n++
	a.label = fmt.Sprintf("air-%d-%d", a.n, time.Now().UnixNano())
	return edit(a.mainGo, a.label)
}

// settle: air kills the old process before it starts the new one.
func (a *airPeer) settle(ctx context.Context, old int) error {
	return waitExited(ctx, old, exitTimeout)
}

// stop stops air, which kills the app (SIGKILL, its default), and makes
// sure that the app is gone: it runs in a process group of its own.
func (a *airPeer) stop(cur int) error {
	_, err := a.p.stop(syscall.SIGTERM, exitTimeout)
	if cur > 0 && alive(cur) {
		syscall.Kill(-cur, syscall.SIGKILL)
		syscall.Kill(cur, syscall.SIGKILL)
	}
	return err
}

func (a *airPeer) kill() {
	a.p.stop(syscall.SIGTERM, killTimeout)
	a.p.kill()
}

// peerHandover is one restart as the probes saw it.
type peerHandover struct {
	serving time.Duration // trigger → the first answer from the new process
	refused time.Duration // how long the probes found nobody answering meanwhile
	// serving's parts, by the new process's own clock readings: to its
	// initialisation, to its start-up, the start-up, and after it; split
	// is false when the answer had no times.
	toInit, toStartup, startup, after time.Duration
	split                             bool
}

// monoNow reads CLOCK_MONOTONIC in nanoseconds, as the peers' app does
// (bench/peers/app.Mono) and as Go's time.Now does for its monotonic
// reading, so that s.at.Sub(trigger) and the app's times compare.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// splitServing cuts serving, which began at the monotonic reading
// trigger, at the times the new process gave in its answer a.
func (h *peerHandover) splitServing(trigger int64, a pidAnswer) {
	if a.Init == 0 || len(a.Startup) != 2 {
		return
	}
	begin, end, served := a.Startup[0], a.Startup[1], trigger+h.serving.Nanoseconds()
	h.toInit = time.Duration(a.Init - trigger)
	h.toStartup = time.Duration(begin - a.Init)
	h.startup = time.Duration(end - begin)
	h.after = time.Duration(served - end)
	h.split = true
}

// peerRun is one run of one system.
type peerRun struct {
	res                     *loadgen.Result
	hs                      []peerHandover
	othersTicks, totalTicks int64
}

// runPeer runs one system under keep-alive load for opt.Duration, with
// opt.Handovers restarts evenly spread, the load never interrupted:
// keep-alive connections live as long as the load, as they would with
// real clients, which is what tableflip's and overseer's old processes
// have to deal with.
func runPeer(ctx context.Context, e *env, bins *peerBins, sys peerSystem, opt options, n int) (*peerRun, error) {
	name := "peers-" + sys.name
	if opt.Runs > 1 {
		name = fmt.Sprintf("%s.%d", name, n)
	}
	dir, err := e.dir(name)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t, err := startPeer(ctx, e, bins, sys, dir, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sys.name, err)
	}
	defer t.kill()
	first, err := waitServed(ctx, addr, startTimeout, probeEvery, func(pidAnswer) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("%s: start: %w", sys.name, err)
	}
	cur := first.answer.PID

	cfg := loadgen.Config{Addr: addr, Clients: opt.Clients, Get: true, Path: "/"}
	warm := cfg
	warm.MaxRequests = int64(50 * opt.Clients)
	wl := loadgen.Start(ctx, warm)
	select {
	case <-wl.Done():
	case <-time.After(startTimeout):
	}
	if res := wl.Stop(); res.FailedTotal() > 0 {
		return nil, fmt.Errorf("%s: warm-up: %d of %d requests failed: %v", sys.name, res.FailedTotal(), res.Requests, res.Examples)
	}

	restarts := opt.Handovers
	if sys.name == "direct" {
		restarts = 0
	}
	e.logf("%s: %v of %s from %d keep-alive clients, %s (%s)", sys.name, opt.Duration, peerRequest, opt.Clients, plural(restarts, "restart"), sys.trigger)
	cfg.Samples = true
	cfg.MaxRequests = int64(math.Ceil(opt.Duration.Seconds())+5) * 1_000_000
	share := startCPUShare()
	start := time.Now()
	load := loadgen.Start(ctx, cfg)
	run := &peerRun{}
	fail := func(err error) (*peerRun, error) {
		load.Stop()
		return nil, fmt.Errorf("%s: %w", sys.name, err)
	}
	for j := 1; j <= restarts; j++ {
		if err := sleepUntil(ctx, start.Add(time.Duration(j)*opt.Duration/time.Duration(restarts+1))); err != nil {
			return fail(err)
		}
		old := cur
		trigger, mono := time.Now(), monoNow()
		if err := t.restart(cur); err != nil {
			return fail(fmt.Errorf("restart %d: %w", j, err))
		}
		s, err := waitServed(ctx, addr, startTimeout, probeEvery, func(a pidAnswer) bool { return a.PID != old })
		if err != nil {
			return fail(fmt.Errorf("restart %d: %w", j, err))
		}
		// Up to the new process's answer by its clock: the way back
		// to the busy harness is not the system's time.
		h := peerHandover{serving: s.at.Sub(trigger), refused: s.refused}
		if s.answer.At > 0 {
			h.serving = time.Duration(s.answer.At - mono)
		}
		h.splitServing(mono, s.answer)
		run.hs = append(run.hs, h)
		cur = s.answer.PID
		if err := t.settle(ctx, old); err != nil {
			return fail(fmt.Errorf("restart %d: %w", j, err))
		}
	}
	if err := sleepUntil(ctx, start.Add(opt.Duration)); err != nil {
		return fail(err)
	}
	run.res = load.Stop()
	run.othersTicks, run.totalTicks = share.delta()
	if err := t.stop(cur); err != nil {
		e.logf("%s: stop: %v", sys.name, err)
	}
	e.logf("%s: %.0f req/s, %d failed; others used %.1f%% of the CPUs", sys.name,
		float64(run.res.OK)/run.res.Elapsed.Seconds(), run.res.FailedTotal(), pct(run.othersTicks, run.totalTicks))
	return run, nil
}

func pct(part, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return round(float64(part)/float64(total)*100, 1)
}

// peerResult is one system of the -peers mode: a JSON object of -json.
type peerResult struct {
	System    string  `json:"system"`
	Version   string  `json:"version,omitempty"`
	Trigger   string  `json:"trigger"`
	Request   string  `json:"request"`
	Clients   int     `json:"clients"`
	Runs      int     `json:"runs"`
	DurationS float64 `json:"duration_s"` // of the load, every run
	Restarts  int     `json:"restarts"`

	Requests     int64            `json:"requests"` // every attempt, failed ones included
	OK           int64            `json:"ok"`
	Failed       int64            `json:"failed"`
	FailedByKind map[string]int64 `json:"failed_by_kind"`
	// Refused counts the load's connections refused: failed_by_kind's
	// "connect".
	Refused int64 `json:"refused"`

	// From the trigger (signal sent, file written) to the first answer
	// of a new process to a probe on a new connection.
	TriggerToServing pctStats `json:"trigger_to_serving_ms"`
	// How long, per restart, the probes found nobody answering.
	RefusedWindow pctStats `json:"refused_window_ms"`
	// Split cuts trigger_to_serving at the new process's own readings
	// of the clock that the benchmark reads.
	Split *servingSplit `json:"split_ms,omitempty"`

	RPS      float64 `json:"rps"`
	RPSRatio float64 `json:"rps_ratio"` // against direct
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	P99Ratio float64 `json:"p99_ratio"` // against direct

	OthersCPU float64  `json:"others_cpu_percent"`
	Machine   *machine `json:"machine,omitempty"`
}

// servingSplit is where trigger → serving went, each part on its own.
// The start-up is the app's, the same for every system; what a system
// adds is before it and after it.
type servingSplit struct {
	// From the trigger to the new process's package initialisation: the
	// system's own work, the fork and exec, the Go runtime's start.
	ToInit pctStats `json:"to_init"`
	// From there to the app's start-up: the system's library in main
	// (child.New, tableflip.New and Listen, overseer's fork of itself).
	ToStartup pctStats `json:"to_startup"`
	// The app's start-up: a 50 ms sleep, with the wake-up after it.
	Startup pctStats `json:"startup"`
	// From the start-up's end to the first answer from the new process:
	// serving, readiness, the old process's stop of its accepts, and the
	// probe itself.
	After pctStats `json:"after_startup"`
}

func summarizeSplit(hs []peerHandover) *servingSplit {
	var toInit, toStartup, startup, after []time.Duration
	for _, h := range hs {
		if !h.split {
			return nil
		}
		toInit, toStartup = append(toInit, h.toInit), append(toStartup, h.toStartup)
		startup, after = append(startup, h.startup), append(after, h.after)
	}
	if len(hs) == 0 {
		return nil
	}
	return &servingSplit{ToInit: pcts(toInit), ToStartup: pcts(toStartup), Startup: pcts(startup), After: pcts(after)}
}

func summarizePeer(sys peerSystem, opt options, runs []*peerRun) *peerResult {
	r := &peerResult{System: sys.name, Version: sys.version, Trigger: sys.trigger, Request: peerRequest,
		Clients: opt.Clients, Runs: len(runs), FailedByKind: map[string]int64{}}
	var elapsed time.Duration
	var others, total int64
	var lat, serving, refused []time.Duration
	var hs []peerHandover
	for _, run := range runs {
		hs = append(hs, run.hs...)
		res := run.res
		elapsed += res.Elapsed
		others += run.othersTicks
		total += run.totalTicks
		r.Requests += res.Requests
		r.OK += res.OK
		r.Failed += res.FailedTotal()
		for k, v := range res.Failed {
			r.FailedByKind[k] += v
		}
		for _, s := range res.Samples {
			if s.OK {
				lat = append(lat, s.Latency)
			}
		}
		for _, h := range run.hs {
			serving = append(serving, h.serving)
			refused = append(refused, h.refused)
		}
		r.Restarts += len(run.hs)
	}
	r.Refused = r.FailedByKind["connect"]
	r.DurationS = round(elapsed.Seconds(), 2)
	if elapsed > 0 {
		r.RPS = round(float64(r.OK)/elapsed.Seconds(), 0)
	}
	r.OthersCPU = pct(others, total)
	sortDurations(lat)
	r.P50, r.P99, r.Max = ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(percentile(lat, 100))
	r.TriggerToServing, r.RefusedWindow = pcts(serving), pcts(refused)
	r.Split = summarizeSplit(hs)
	return r
}

// comparePeers runs each system in turn, opt.Runs times over, and passes
// each result to emit once its last run is done. The systems run one
// after another, each under an uninterrupted load: keep-alive
// connections that last are what tells the peers apart.
func comparePeers(ctx context.Context, e *env, bins *peerBins, systems []peerSystem, opt options, emit func(*peerResult)) ([]*peerResult, error) {
	adoptOrphans(true)
	defer adoptOrphans(false)
	runs := map[string][]*peerRun{}
	for i := 1; i <= opt.Runs; i++ {
		if opt.Runs > 1 {
			e.logf("run %d of %d", i, opt.Runs)
		}
		for _, sys := range systems {
			r, err := runPeer(ctx, e, bins, sys, opt, i)
			if err != nil {
				return nil, err
			}
			runs[sys.name] = append(runs[sys.name], r)
		}
	}
	var out []*peerResult
	var direct *peerResult
	for _, sys := range systems {
		r := summarizePeer(sys, opt, runs[sys.name])
		if sys.name == "direct" {
			direct = r
		}
		if direct != nil {
			r.RPSRatio, r.P99Ratio = ratio(r.RPS, direct.RPS), ratio(r.P99, direct.P99)
		}
		out = append(out, r)
		if emit != nil {
			emit(r)
		}
	}
	return out, nil
}

// selectPeers returns the systems named in only (all when empty), direct
// always first.
func selectPeers(only []string) []peerSystem {
	var out []peerSystem
	for _, s := range peerSystems() {
		if len(only) == 0 || s.name == "direct" || contains(only, s.name) {
			out = append(out, s)
		}
	}
	return out
}

// needsAir reports whether air is among systems.
func needsAir(names []string) bool {
	return contains(names, "air")
}
