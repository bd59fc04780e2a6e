package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/harness"
)

// The -devloop mode: the same one-line change to the same app, saved
// again and again, under baton dev and under air, against the time of
// `go build` of that change alone, with and without DWARF.

// devSystemNames are the systems -devloop knows by name; baton dev with
// other build commands (-dev-build) is named baton-dev-1, baton-dev-2, …
var devSystemNames = []string{"go-build", "go-build-w", "baton-dev", "baton-dev-w", "air"}

// defaultDevBuilds are baton dev's build commands: as a user writes one,
// and with -ldflags=-w (no DWARF).
var defaultDevBuilds = []string{"go build -o {output} .", "go build -ldflags=-w -o {output} ."}

// devBuildFlag is -dev-build, repeatable: one baton dev variant each.
type devBuildFlag []string

func (f *devBuildFlag) String() string { return strings.Join(*f, "; ") }

func (f *devBuildFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// devSystem is one way of turning a saved change into a serving app.
type devSystem struct {
	name    string
	kind    string   // "go-build", "baton-dev" or "air"
	command []string // the build command
}

// devSystems returns the systems of the mode, in the order each round
// visits them: the go build floors first.
func devSystems(builds []string, only []string) []devSystem {
	var all []devSystem
	all = append(all,
		devSystem{"go-build", "go-build", strings.Fields("go build -o bin/app .")},
		devSystem{"go-build-w", "go-build", strings.Fields("go build -ldflags=-w -o bin/app .")})
	custom := len(builds) > 0
	if !custom {
		builds = defaultDevBuilds
	}
	for i, b := range builds {
		name := []string{"baton-dev", "baton-dev-w"}[min(i, 1)]
		if custom {
			name = fmt.Sprintf("baton-dev-%d", i+1)
		}
		all = append(all, devSystem{name, "baton-dev", strings.Fields(b)})
	}
	all = append(all, devSystem{"air", "air", strings.Fields("go build -o ./tmp/main .")})
	var out []devSystem
	for _, s := range all {
		if len(only) == 0 || contains(only, s.name) || (s.kind == "baton-dev" && contains(only, "baton-dev")) {
			out = append(out, s)
		}
	}
	return out
}

// withoutDWARF reports whether a build command links with -w.
func withoutDWARF(cmd []string) bool {
	for _, a := range cmd {
		if strings.HasPrefix(a, "-ldflags") && strings.Contains(a, "-w") {
			return true
		}
	}
	return false
}

// devTarget is one system of the mode, set up and serving.
type devTarget struct {
	sys    devSystem
	dir    string // its copy of the app's module
	mainGo string
	addr   string
	p      *proc    // baton dev
	air    *airPeer // air
	// probed is the app alone, which a go build row's probes ask while
	// it builds: the other rows build while the harness probes them.
	probed *proc
	gen    int // baton dev: the generation serving
	cur    int // the pid serving
}

// devCycle is one change as one system saw it.
type devCycle struct {
	serving time.Duration // save → the new source serving; go build: the build
	build   time.Duration // baton dev's own figure of the build
	ready   time.Duration // baton dev's own figure: start → READY=1
	refused time.Duration // probes that found nobody answering
}

// devResult is one system of the -devloop mode: a JSON object of -json.
type devResult struct {
	System  string `json:"system"`
	Command string `json:"command"` // the build command
	Changes int    `json:"changes"`
	// SaveToServing runs from the write of main.go until a probe is
	// answered by the changed source; for go-build rows, the build alone
	// (while the app alone is probed, as the other rows are as they build).
	SaveToServing pctStats `json:"save_to_serving_ms"`
	// baton dev's own figures, from its cycle lines: the build, and the
	// start of the new generation until READY=1.
	Build pctStats `json:"build_ms,omitzero"`
	Ready pctStats `json:"ready_ms,omitzero"`
	// RefusedWindow is, per change, how long the probes found nobody
	// answering.
	RefusedWindow pctStats `json:"refused_window_ms"`
	// OverBuild is the median save → serving less the median of the go
	// build with the same link flags, measured in the same rounds.
	OverBuild *float64 `json:"over_build_ms,omitempty"`
	Machine   *machine `json:"machine,omitempty"`
}

// devLoop sets every system up, then makes rounds changes: in each round
// each system in turn gets the one-line change and the harness waits
// until it serves it, so that all see the machine alike.
func devLoop(ctx context.Context, e *env, bins *peerBins, systems []devSystem, rounds int, emit func(*devResult)) ([]*devResult, error) {
	var ts []*devTarget
	defer func() {
		for _, t := range ts {
			t.kill()
		}
	}()
	for _, sys := range systems {
		t, err := startDev(ctx, e, bins, sys)
		if t != nil {
			ts = append(ts, t)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sys.name, err)
		}
	}
	cycles := map[string][]devCycle{}
	for i := 1; i <= rounds; i++ {
		for _, t := range ts {
			c, err := t.change(ctx, i)
			if err != nil {
				return nil, fmt.Errorf("%s: change %d: %w", t.sys.name, i, err)
			}
			e.logf("%s: change %d served in %v", t.sys.name, i, c.serving.Round(time.Millisecond))
			cycles[t.sys.name] = append(cycles[t.sys.name], c)
		}
	}
	for _, t := range ts {
		if err := t.stop(); err != nil {
			e.logf("%s: stop: %v", t.sys.name, err)
		}
	}
	ts = nil
	var out []*devResult
	floors := map[bool]float64{}
	for _, sys := range systems {
		r := &devResult{System: sys.name, Command: strings.Join(sys.command, " ")}
		var serving, build, ready, refused []time.Duration
		for _, c := range cycles[sys.name] {
			serving = append(serving, c.serving)
			refused = append(refused, c.refused)
			if c.build > 0 {
				build = append(build, c.build)
				ready = append(ready, c.ready)
			}
		}
		r.Changes = len(serving)
		r.SaveToServing, r.Build, r.Ready = pcts(serving), pcts(build), pcts(ready)
		if sys.kind != "go-build" {
			r.RefusedWindow = pcts(refused)
		}
		if sys.kind == "go-build" {
			floors[withoutDWARF(sys.command)] = r.SaveToServing.P50
		} else if f, ok := floors[withoutDWARF(sys.command)]; ok {
			over := round(r.SaveToServing.P50-f, 1)
			r.OverBuild = &over
		}
		out = append(out, r)
		if emit != nil {
			emit(r)
		}
	}
	return out, nil
}

// startDev sets one system up in a copy of the app's module and waits
// until it serves (the go build rows build once, to warm up).
func startDev(ctx context.Context, e *env, bins *peerBins, sys devSystem) (*devTarget, error) {
	dir, err := e.dir(filepath.Join("devloop", sys.name))
	if err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	t := &devTarget{sys: sys, dir: src, mainGo: filepath.Join(src, "main.go")}
	switch sys.kind {
	case "go-build":
		if err := copyPeerModule(bins.src, e.root, src, "batonapp"); err != nil {
			return nil, err
		}
		if t.addr, err = freeAddr(); err != nil {
			return nil, err
		}
		if t.probed, err = startProc(bins.plain, nil, dir, harness.ChildEnv("PEER_ADDR="+t.addr), filepath.Join(dir, "probed.log")); err != nil {
			return nil, err
		}
		if _, err := waitServed(ctx, t.addr, 2*startTimeout, probeEvery, func(pidAnswer) bool { return true }); err != nil {
			return t, err
		}
		_, err := t.build(ctx)
		return t, err
	}
	if t.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	log := filepath.Join(dir, sys.name+".log")
	e.logf("%s: starting, first build", sys.name)
	switch sys.kind {
	case "baton-dev":
		if err := copyPeerModule(bins.src, e.root, src, "batonapp"); err != nil {
			return nil, err
		}
		quoted := make([]string, len(sys.command))
		for i, a := range sys.command {
			quoted[i] = strconv.Quote(a)
		}
		cfg := fmt.Sprintf(`log { format = "text" }
program "app" {
  command = ["./app"]
  listener "http" { address = %q }
  ready { timeout = "60s" }
  stop { timeout = "10s" }
  build {
    command = [%s]
    watch   = ["."]
    exclude = ["*_test.go"]
  }
}
`, t.addr, strings.Join(quoted, ", "))
		file := filepath.Join(src, "config.hcl")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		if t.p, err = startProc(e.baton, []string{"dev", "-config", file}, src, harness.ChildEnv(), log); err != nil {
			return nil, err
		}
	case "air":
		if t.air, err = startAir(ctx, bins, src, "batonapp", harness.ChildEnv("PEER_ADDR="+t.addr), log); err != nil {
			return nil, err
		}
	}
	s, err := waitServed(ctx, t.addr, 2*startTimeout, probeEvery, func(pidAnswer) bool { return true })
	if err != nil {
		return t, fmt.Errorf("first build: %w", err)
	}
	t.cur = s.answer.PID
	if t.p != nil {
		_, _, t.gen, err = t.cycleLine(ctx, 1)
	}
	return t, err
}

// build runs the go build row's command in its copy.
func (t *devTarget) build(ctx context.Context) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, t.sys.command[0], t.sys.command[1:]...)
	cmd.Dir = t.dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", strings.Join(t.sys.command, " "), err, out)
	}
	return took, nil
}

// change makes round i's one-line change and waits until it serves.
func (t *devTarget) change(ctx context.Context, i int) (devCycle, error) {
	label := fmt.Sprintf("%s-%d-%d", t.sys.name, i, time.Now().UnixNano())
	if t.sys.kind == "go-build" {
		if err := edit(t.mainGo, label); err != nil {
			return devCycle{}, err
		}
		// Probed meanwhile, as the other rows are while they build.
		stop, probing := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(probing)
			probe(ctx, t.addr, probeEvery, stop, func(time.Time, time.Time, pidAnswer, error) {})
		}()
		took, err := t.build(ctx)
		close(stop)
		<-probing
		return devCycle{serving: took}, err
	}
	save := time.Now()
	if err := edit(t.mainGo, label); err != nil {
		return devCycle{}, err
	}
	s, err := waitServed(ctx, t.addr, 2*startTimeout, probeEvery, func(a pidAnswer) bool { return a.Edit == label })
	if err != nil {
		return devCycle{}, err
	}
	c := devCycle{serving: s.at.Sub(save), refused: s.refused}
	old := t.cur
	t.cur = s.answer.PID
	if t.p != nil {
		if c.build, c.ready, t.gen, err = t.cycleLine(ctx, t.gen+1); err != nil {
			return c, err
		}
	}
	// The next change waits for the old process to be gone, as a person
	// saving again would not, so that one change's end does not weigh
	// on the next one's figures.
	return c, waitExited(ctx, old, exitTimeout)
}

// cycleLine is baton dev's line for a generation: "… built in 1.4s ·
// ready in 62ms · gen 3 serving".
var cycleLine = regexp.MustCompile(`built in (\S+) · ready in (\S+) · gen (\d+) serving`)

// cycleLine waits for baton dev's cycle line of generation gen or a later
// one, and returns its build and ready times.
func (t *devTarget) cycleLine(ctx context.Context, gen int) (build, ready time.Duration, g int, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(t.p.log)
		ms := cycleLine.FindAllSubmatch(b, -1)
		if len(ms) > 0 {
			m := ms[len(ms)-1]
			g, _ = strconv.Atoi(string(m[3]))
			if g >= gen {
				build, err1 := time.ParseDuration(string(m[1]))
				ready, err2 := time.ParseDuration(string(m[2]))
				if err1 != nil || err2 != nil {
					return 0, 0, g, fmt.Errorf("baton dev: cannot read %q", m[0])
				}
				return build, ready, g, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("baton dev printed no cycle line for gen %d\n%s", gen, t.p.tail(10))
		}
		select {
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		case <-time.After(5 * time.Millisecond): // polling a log file, not synchronising
		}
	}
}

func (t *devTarget) stop() error {
	if t.probed != nil {
		t.probed.stop(syscall.SIGTERM, exitTimeout)
	}
	switch {
	case t.p != nil:
		_, err := t.p.stop(syscall.SIGTERM, exitTimeout)
		return err
	case t.air != nil:
		return t.air.stop(t.cur)
	}
	return nil
}

func (t *devTarget) kill() {
	if t.probed != nil {
		t.probed.stop(syscall.SIGTERM, killTimeout)
	}
	switch {
	case t.p != nil:
		t.p.stop(syscall.SIGTERM, killTimeout)
	case t.air != nil:
		t.air.kill()
		if t.cur > 0 && alive(t.cur) {
			syscall.Kill(t.cur, syscall.SIGKILL)
		}
	}
}
