// Command fleet measures baton and the child package across a fleet of
// three hosts behind HAProxy: each host a network namespace of this
// machine running baton and examples/orders with its own SQLite
// database, HAProxy (from the distribution) in front with health checks
// on /readyz every 500 ms, a server down after 2 failures, keep-alive
// connections to the servers, and no retry and no redispatch. Keep-alive
// clients POST orders through HAProxy while hosts are deployed to,
// replaced or lost; it reports what the clients saw, the acknowledged
// orders lost, and HAProxy's own counters. See FLEET.md.
//
//	sudo go run ./fleet                       every scenario
//	sudo go run ./fleet -short                the CI test's sizes
//	sudo go run ./fleet -scenarios deploy,lost-kill -json
//
// It needs root (network namespaces), iproute2 and haproxy. Traffic goes
// only to the namespaces it creates (10.213.0.0/24 exists only inside
// them) and to unix sockets; every namespace, veth and bridge is removed
// at the end, on ^C too, and a run that was killed is cleaned up by the
// next one.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/internal/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Bool("short", false, "the CI test's sizes: fewer clients, fewer orders between steps, shorter stop timeouts")
	names := fs.String("scenarios", strings.Join(scenarioNames, ","), "the scenarios to run, comma-separated")
	asJSON := fs.Bool("json", false, "print one JSON object per scenario instead of a table")
	keep := fs.Bool("keep", false, "keep the work directory (logs, databases, HAProxy's config)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p := fullParams
	if *short {
		p = shortParams
	}
	f, err := newFleet(ctx, p, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fleet: %v\n", err)
		return 1
	}
	defer f.close(*keep)
	var results []*result
	for _, name := range strings.Split(*names, ",") {
		r, err := f.runScenario(strings.TrimSpace(name))
		if err != nil {
			fmt.Fprintf(stderr, "fleet: %s: %v\n", name, err)
			*keep = true
			return 1
		}
		results = append(results, r)
		if *asJSON {
			json.NewEncoder(stdout).Encode(r)
		}
	}
	if !*asJSON {
		report(stdout, results)
	}
	return 0
}

// report prints the results side by side, with the machine and the date.
func report(w io.Writer, rs []*result) {
	fmt.Fprintf(w, "\n%s, %d CPUs, load %s; HAProxy inter 500ms fall 2 rise 2, retries 0, no redispatch\n\n",
		time.Now().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), harness.LoadAvg())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tvariant\trequests\tfailed\tlost\tDOWN\tretries\ttime to DOWN\texits\ttook\ttarget")
	for _, r := range rs {
		ttd := "-"
		if r.TimeToDown > 0 {
			ttd = r.TimeToDown.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d of %d\t%d\t%d\t%s\t%v\t%s\t%s\n",
			r.Scenario, r.Variant, r.Requests, r.Failed, r.Lost, r.Acked, r.Down, r.Retries, ttd, r.Exits, r.Elapsed.Round(100*time.Millisecond), r.Target)
	}
	tw.Flush()
	for _, r := range rs {
		if r.Failed == 0 && len(r.Notes) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s):", r.Scenario, r.Variant)
		if r.Failed > 0 {
			fmt.Fprintf(w, " failed %v; HAProxy's errors by server %v", r.FailedBy, r.ServerErrors)
		}
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
}
