// Command bench measures baton's handover against a naive stop-then-start
// restart and against the example run directly without restarts, on the
// same machine in one run, and prints what clients saw: requests, failures
// by kind, acknowledged writes lost, throughput and latency, inside the
// handover windows too. See BENCH.md for the method and the figures.
//
//	go run ./bench                                   direct, naive, baton; POST and GET
//	go run ./bench -json -duration 10s -handovers 5  one JSON object per scenario
//	go run ./bench -scale                            handover time with 1, 10, 50 programs
//	go run ./bench -soak                             1,000 handovers in a row under load
//	go run ./bench -longlived                        WebSocket and SSE clients across 20 handovers
//	go run ./bench -peers                            the same small app under baton, tableflip, overseer, air
//	go run ./bench -devloop                          save → serving: baton dev, air, go build
//	go run ./bench -journal                          POST with the example's journal against without
//	go run ./bench -idle                             idle keep-alive pools, directly and through nginx
//	go run ./bench -baddeploy                        a bad deploy: baton with a bake, without, and naive
//
// It builds baton and examples/orders from the module it runs in, and
// sends its load to 127.0.0.1 only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// soakFlag is -soak: a number of handovers, 1000 when the flag stands
// alone.
type soakFlag int

func (f *soakFlag) String() string { return strconv.Itoa(int(*f)) }

func (f *soakFlag) Set(s string) error {
	switch s {
	case "true":
		*f = 1000
		return nil
	case "false":
		*f = 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return errors.New("want a number of handovers, as in -soak=1000")
	}
	*f = soakFlag(n)
	return nil
}

func (f *soakFlag) IsBoolFlag() bool { return true }

const usageText = `Usage: go run ./bench [flags]

Builds baton and examples/orders, then loads the example from keep-alive
clients (no retries) in three scenarios:

  direct  the example alone, never restarted: the ceiling
  naive   restarted by stop-then-start, as most reloaders do
  baton   handed over by baton as many times

and the same three with GET requests only (direct-get, naive-get,
baton-get). The three of a request run side by side, the load taking
turns of -slice on each, so that the machine's slow spells touch them
alike. It prints requests, failures by kind, acknowledged writes lost
from SQLite, requests/s and latencies, with ratios against direct.

-scale and -soak run baton alone instead: handover time with many
programs, and many handovers in a row. -longlived keeps WebSocket and
SSE clients of the example connected across handovers (20 unless
-handovers says otherwise) under a steady POST load, and counts clean
goodbyes, abnormal closes, reconnect times and events missed. -idle
runs clients that sit idle between requests (net/http Transports,
-pool of them, pausing up to -maxpause) against direct, naive and baton,
reached directly and through nginx (-proxy), across 20 handovers unless
-handovers says otherwise, and counts failures, 502s, lost writes,
reconnects per handover and the old generations' lifetimes.

-peers runs a small Gin app (50 ms start-up) alone (direct), under baton,
tableflip (its example's Shutdown, and with a keep-alive-aware drain),
overseer and air, one after another under the same uninterrupted load,
with the same number of restarts (-duration 48s and 5 restarts unless
set). The peers are built from bench/peers, whose go.mod files pin them.

-journal runs the example directly with its journal (each 202 after a
group-committed fdatasync) and without, side by side, and compares their
POST latency and throughput.

-baddeploy deploys a bad version of the example (ORDERS_FAULT: a share of
500s, a crash 2 s after start, 100 ms more per order) under POST load
from clients that reconnect every -perconn requests, three ways: baton
with a bake (the revert is baton's), baton without one, and a naive
stop-then-start (for these two an ideal monitor applies the bake's rule
to what the clients see, and reverts); it reports the 5xx, the failed
and refused requests, lost writes, the time from the failure's first
sign to the revert and to the recovery, and whether the old process
serves after it. -scenarios picks systems (bake, nobake, naive), -kinds
bad versions (5xx, crash, slow), -interval the bake's interval.

-devloop saves the same one-line change to the same app again and again
(-handovers times) under baton dev and air, and times go build of it.

Flags:
`

func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	var opt options
	fs.DurationVar(&opt.Duration, "duration", 10*time.Second, "how long each scenario runs under load")
	fs.IntVar(&opt.Handovers, "handovers", 5, "restarts (naive) and handovers (baton) per scenario, evenly spaced (with -peers, restarts per system); with -scale, rounds per program count; with -devloop, changes per system")
	fs.IntVar(&opt.Clients, "c", 16, "concurrent keep-alive `clients`")
	fs.DurationVar(&opt.Slice, "slice", time.Second, "the load's turn on each scenario: the scenarios of a request run side by side, their loads interleaved (0: one after another, each in one piece)")
	fs.IntVar(&opt.Runs, "runs", 1, "run every scenario this many times, with new processes, and pool the figures")
	fs.BoolVar(&opt.Get, "get", true, "also run the GET-only variants")
	asJSON := fs.Bool("json", false, "print one JSON object per line: per scenario, per -scale count, or the -soak result")
	doScale := fs.Bool("scale", false, "instead of the scenarios: handover time with -programs programs under one baton")
	programs := fs.String("programs", "1,10,50", "with -scale: the `counts` of programs, comma-separated")
	var soakN soakFlag
	fs.Var(&soakN, "soak", "instead of the scenarios: handovers in a row under load, sampling baton's fds, goroutines and RSS (-soak: 1000, -soak=N: N)")
	only := fs.String("scenarios", "", "run only these `scenarios`, comma-separated (direct always runs: the others are measured against it); with -peers or -devloop, these systems")
	fs.BoolVar(&opt.Journal, "journal", false, "instead of the scenarios: POST latency and throughput of the example with its journal against without, side by side")
	keep := fs.Bool("keep", false, "keep the work directory: configs, logs and databases")
	doLong := fs.Bool("longlived", false, "instead of the scenarios: WebSocket and SSE clients across handovers under POST load")
	var lopt longlivedOptions
	fs.IntVar(&lopt.WS, "ws", 200, "with -longlived: WebSocket `clients`")
	fs.IntVar(&lopt.SSE, "sse", 200, "with -longlived: Server-Sent Events `clients`")
	fs.IntVar(&lopt.Rate, "rate", 100, "with -longlived: POST `orders` per second, about; each is an event to every client")
	fs.DurationVar(&lopt.Pause, "pause", 500*time.Millisecond, "with -longlived: the wait between one handover, once every client is back, and the next")
	doPeers := fs.Bool("peers", false, "instead of the scenarios: the same app under baton, tableflip, overseer and air (-scenarios picks systems)")
	doDev := fs.Bool("devloop", false, "instead of the scenarios: save → serving of a one-line change under baton dev and air, against go build (-scenarios picks systems)")
	var devBuilds devBuildFlag
	fs.Var(&devBuilds, "dev-build", "with -devloop: a build `command` for baton dev's build block, with {output}; repeatable (default: \"go build -o {output} .\" and the same with -ldflags=-w)")
	doIdle := fs.Bool("idle", false, "instead of the scenarios: idle keep-alive pools across handovers, directly and through nginx")
	var iopt idleOptions
	fs.IntVar(&iopt.Clients, "pool", 64, "with -idle: `clients`, each with its own http.Transport")
	fs.DurationVar(&iopt.MaxPause, "maxpause", 3*time.Second, "with -idle: the longest pause of a client after each request (each is random, from 0)")
	fs.DurationVar(&iopt.Interval, "interval", time.Second, "with -idle: the wait between one handover, once the old generation is gone, and the next; with -baddeploy: the bake's interval")
	fs.BoolVar(&iopt.Proxy, "proxy", true, "with -idle: also run the scenarios through nginx (upstream keepalive 32)")
	doBad := fs.Bool("baddeploy", false, "instead of the scenarios: a bad deploy under baton with a bake, without, and naive (-scenarios picks systems)")
	perConn := fs.Int("perconn", 10, "with -baddeploy: the `requests` a client sends on a connection before it dials a new one")
	badKinds := fs.String("kinds", "", "with -baddeploy: the bad versions, comma-separated: 5xx, crash, slow (default all)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q (a count for -soak is written -soak=N)\n", fs.Arg(0))
		return 2
	}
	counts, err := parseCounts(*programs)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "bench: -programs: %v\n", err)
		return 2
	case opt.Duration < time.Second:
		fmt.Fprintln(stderr, "bench: -duration must be at least 1s")
		return 2
	case opt.Handovers < 0 || (*doScale && opt.Handovers < 1):
		fmt.Fprintln(stderr, "bench: -handovers must be at least 0, and 1 with -scale")
		return 2
	case opt.Slice < 0:
		fmt.Fprintln(stderr, "bench: -slice must not be negative")
		return 2
	case opt.Runs < 1:
		fmt.Fprintln(stderr, "bench: -runs must be at least 1")
		return 2
	case opt.Clients < 1:
		fmt.Fprintln(stderr, "bench: -c must be at least 1")
		return 2
	case opt.Journal && (*doScale || soakN > 0 || *only != "" || *doPeers || *doDev || *doLong || *doIdle):
		fmt.Fprintln(stderr, "bench: -journal runs its own two scenarios: not with another mode or -scenarios")
		return 2
	case *doLong && (lopt.WS < 0 || lopt.SSE < 0 || lopt.WS+lopt.SSE == 0 || lopt.Rate < 1 || lopt.Pause < 0):
		fmt.Fprintln(stderr, "bench: -longlived needs -ws and -sse of at least 0, one of them above, -rate of at least 1 and a -pause of at least 0")
		return 2
	case *doIdle && (iopt.Clients < 1 || iopt.MaxPause < 0 || iopt.Interval < 0):
		fmt.Fprintln(stderr, "bench: -idle needs a -pool of at least 1 and a -maxpause and -interval of at least 0")
		return 2
	case *doBad && (*perConn < 1 || iopt.Interval < 10*time.Millisecond || iopt.Interval > badBakeFor):
		fmt.Fprintf(stderr, "bench: -baddeploy needs a -perconn of at least 1 and an -interval from 10ms to %v\n", badBakeFor)
		return 2
	}
	bopt := badOptions{Clients: opt.Clients, PerConnection: *perConn, Interval: iopt.Interval, BakeFor: badBakeFor,
		Before: badBefore, After: badAfter}
	if *badKinds != "" {
		for _, name := range strings.Split(*badKinds, ",") {
			k, ok := findBadKind(strings.TrimSpace(name))
			if !ok {
				fmt.Fprintf(stderr, "bench: -kinds: no bad version %q (5xx, crash, slow)\n", name)
				return 2
			}
			bopt.Kinds = append(bopt.Kinds, k)
		}
	}
	lopt.Handovers, iopt.Handovers = 20, 20
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "handovers" {
			lopt.Handovers, iopt.Handovers = opt.Handovers, opt.Handovers
		}
	})

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	modes := 0
	for _, on := range []bool{*doScale || soakN > 0, *doPeers, *doDev, *doLong, *doIdle, *doBad} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		fmt.Fprintln(stderr, "bench: -scale/-soak, -peers, -devloop, -longlived, -idle and -baddeploy are separate modes: choose one")
		return 2
	}
	for _, b := range devBuilds {
		if !strings.Contains(b, "{output}") {
			fmt.Fprintf(stderr, "bench: -dev-build %q: the command must write the binary to {output}\n", b)
			return 2
		}
	}
	if *doPeers && !set["duration"] {
		opt.Duration = 48 * time.Second // restarts 8 s apart with the default 5
	}
	if opt.Journal {
		opt.Handovers, opt.Get = 0, false
	}
	if *only != "" {
		opt.Get = false // only if a GET scenario is named
		for _, name := range strings.Split(*only, ",") {
			name = strings.TrimSpace(name)
			if *doBad {
				if !contains(badSystems, name) {
					fmt.Fprintf(stderr, "bench: -scenarios: no system %q (bake, nobake, naive)\n", name)
					return 2
				}
				bopt.Systems = append(bopt.Systems, name)
				continue
			}
			if *doPeers || *doDev {
				if !validPeer(name, *doDev) {
					fmt.Fprintf(stderr, "bench: -scenarios: no system %q\n", name)
					return 2
				}
				opt.Only = append(opt.Only, name)
				continue
			}
			if !validScenario(name) {
				fmt.Fprintf(stderr, "bench: -scenarios: no scenario %q\n", name)
				return 2
			}
			opt.Only = append(opt.Only, name)
			opt.Get = opt.Get || strings.HasSuffix(name, "-get")
		}
	}

	e, err := setup(ctx, stderr, *keep)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer e.close()
	m := thisMachine()
	if *asJSON {
		printMachine(stderr, m)
	}

	switch {
	case *doBad:
		var emit func(*badResult)
		if *asJSON {
			emit = func(r *badResult) { r.Machine = &m; emitJSON(stdout, r) }
		}
		rs, err := badDeploy(ctx, e, bopt, emit)
		if !*asJSON {
			printMachine(stdout, m)
			fmt.Fprintln(stdout)
			printBadDeploy(stdout, rs)
		}
		if err != nil {
			return failed(ctx, stderr, err)
		}
	case *doIdle:
		var emit func(*idleResult)
		if *asJSON {
			emit = func(r *idleResult) { r.Machine = &m; emitJSON(stdout, r) }
		}
		rs, err := idle(ctx, e, iopt, emit)
		if !*asJSON {
			printMachine(stdout, m)
			fmt.Fprintln(stdout)
			printIdle(stdout, rs)
		}
		if err != nil {
			return failed(ctx, stderr, err)
		}
	case *doLong:
		r, err := longlived(ctx, e, lopt)
		if err != nil {
			return failed(ctx, stderr, err)
		}
		if *asJSON {
			r.Machine = &m
			emitJSON(stdout, r)
		} else {
			printMachine(stdout, m)
			fmt.Fprintln(stdout)
			printLonglived(stdout, r)
		}
	case *doPeers:
		systems := selectPeers(opt.Only)
		var names []string
		for _, sys := range systems {
			names = append(names, sys.name)
		}
		bins, err := buildPeers(ctx, e, needsAir(names))
		if err != nil {
			return failed(ctx, stderr, err)
		}
		var emit func(*peerResult)
		if *asJSON {
			emit = func(r *peerResult) { r.Machine = &m; emitJSON(stdout, r) }
		}
		rs, err := comparePeers(ctx, e, bins, systems, opt, emit)
		if err != nil {
			return failed(ctx, stderr, err)
		}
		if !*asJSON {
			printMachine(stdout, m)
			printPeers(stdout, opt, rs)
		}
	case *doDev:
		systems := devSystems(devBuilds, opt.Only)
		var air bool
		for _, sys := range systems {
			air = air || sys.kind == "air"
		}
		bins, err := buildPeers(ctx, e, air)
		if err != nil {
			return failed(ctx, stderr, err)
		}
		var emit func(*devResult)
		if *asJSON {
			emit = func(r *devResult) { r.Machine = &m; emitJSON(stdout, r) }
		}
		rs, err := devLoop(ctx, e, bins, systems, max(1, opt.Handovers), emit)
		if err != nil {
			return failed(ctx, stderr, err)
		}
		if !*asJSON {
			printMachine(stdout, m)
			printDevLoop(stdout, rs)
		}
	case *doScale || soakN > 0:
		if *doScale {
			var emit func(*scaleResult)
			if *asJSON {
				emit = func(r *scaleResult) { r.Machine = &m; emitJSON(stdout, r) }
			}
			rs, err := scale(ctx, e, counts, opt.Handovers, emit)
			if err != nil {
				return failed(ctx, stderr, err)
			}
			if !*asJSON {
				printMachine(stdout, m)
				fmt.Fprintf(stdout, "scale: %d rounds per count of programs, no load\n\n", opt.Handovers)
				printScale(stdout, rs)
			}
		}
		if soakN > 0 {
			r, err := soak(ctx, e, int(soakN), opt.Clients)
			if err != nil {
				return failed(ctx, stderr, err)
			}
			if *asJSON {
				r.Machine = &m
				emitJSON(stdout, r)
			} else {
				printMachine(stdout, m)
				fmt.Fprintln(stdout)
				printSoak(stdout, r)
			}
		}
	default:
		var emit func(*scenarioResult)
		if *asJSON {
			printLoad(stderr, opt)
			emit = func(r *scenarioResult) { r.Machine = &m; emitJSON(stdout, r) }
		}
		rs, err := compare(ctx, e, opt, emit)
		if err != nil {
			return failed(ctx, stderr, err)
		}
		if !*asJSON {
			printMachine(stdout, m)
			printLoad(stdout, opt)
			if opt.Journal {
				printJournal(stdout, rs)
			} else {
				printComparison(stdout, rs)
			}
		}
	}
	return 0
}

func failed(ctx context.Context, stderr io.Writer, err error) int {
	if ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	fmt.Fprintf(stderr, "bench: %v\n", err)
	return 1
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a count of programs", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func validScenario(name string) bool {
	for _, sc := range scenarios(true) {
		if sc.name == name {
			return true
		}
	}
	return false
}
