package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// emitJSON writes v as one line of JSON: a stream of objects, one per
// scenario, as go test -json does.
func emitJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// printMachine says where and when the figures were taken, and whether
// the machine was quiet.
func printMachine(w io.Writer, m machine) {
	cpu := ""
	if m.CPUModel != "" {
		cpu = " (" + m.CPUModel + ")"
	}
	fmt.Fprintf(w, "baton bench, %s: %s, %d CPUs%s, %.1f GiB, %s\n", m.Date, m.OS, m.CPUs, cpu, m.MemoryGiB, m.GoVersion)
	fmt.Fprintf(w, "before the run: CPUs %.0f%% busy with other work, load average %s%s\n", m.Busy, m.LoadAvg, busyNote(m))
}

func printLoad(w io.Writer, opt options) {
	slices, d := plan(opt)
	fmt.Fprintf(w, "load: %d keep-alive clients, no retries, %v per scenario", opt.Clients, opt.Duration)
	if slices > 1 {
		fmt.Fprintf(w, " in %d turns of %v, the scenarios of a request side by side", slices, d)
	}
	if opt.Journal {
		fmt.Fprint(w, "; POST /orders, no restarts")
	} else {
		fmt.Fprintf(w, "; naive and baton: %s each, evenly spread", plural(opt.Handovers, "restart"))
	}
	if opt.Runs > 1 {
		fmt.Fprintf(w, "; %d runs, pooled", opt.Runs)
	}
	fmt.Fprint(w, "\n\n")
}

// printComparison writes the scenarios as tables, with ratios against
// direct, then the details and baton against its targets.
func printComparison(w io.Writer, rs []*scenarioResult) {
	printBusy(w, rs, func(r *scenarioResult) (string, float64) { return r.Scenario, r.OthersCPU })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequest\trequests\tfailed\tlost writes\treq/s\t×direct\t")
	for _, r := range rs {
		lost := "-"
		if r.Acked > 0 {
			lost = fmt.Sprintf("%d of %d", r.LostWrites, r.Acked)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.0f\t%.3f\t\n", r.Scenario, r.Request, r.Requests, r.Failed, lost, r.RPS, r.RPSRatio)
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tp50 ms\tp99 ms\t×direct\tmax ms\tp99 in windows\t×direct p99\tmax in windows\ttrigger→serving ms\twindow ms\t")
	for _, r := range rs {
		win, winRatio, winMax, serving, window := "-", "-", "-", "-", "-"
		if r.Handovers > 0 {
			win, winRatio, winMax = fmt.Sprintf("%.2f", r.P99In), fmt.Sprintf("%.2f", r.P99WindowRatio), fmt.Sprintf("%.2f", r.MaxIn)
			serving = fmt.Sprintf("%.0f / %.0f", r.TriggerToServing.Median, r.TriggerToServing.Max)
			window = fmt.Sprintf("%.0f / %.0f", r.Window.Median, r.Window.Max)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\t\n", r.Scenario, r.P50, r.P99, r.P99Ratio, r.Max, win, winRatio, winMax, serving, window)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(trigger→serving and window: median / max over the handovers; windows run from the trigger until the old process exited and the new one served)")

	fmt.Fprintln(w)
	for _, r := range rs {
		var parts []string
		if r.Failed > 0 {
			parts = append(parts, "failed by kind: "+kinds(r.FailedByKind))
		}
		if r.Handovers > 0 {
			parts = append(parts, fmt.Sprintf("%d requests in windows (%d failed)", r.WindowRequests, r.WindowFailed),
				fmt.Sprintf("p99 outside windows %.2f ms", r.P99Out))
			parts = append(parts, fmt.Sprintf("replaced processes exited %v", r.OldExitCodes))
		}
		if r.Handovers > 0 {
			parts = append(parts, fmt.Sprintf("throughput lost per handover: %.0f ms of direct's", r.CostPerHandover))
		}
		if r.ReadyIn.N > 0 {
			parts = append(parts, fmt.Sprintf("ready in %.0f ms median (max %.0f)", r.ReadyIn.Median, r.ReadyIn.Max))
		}
		if u := r.Baton; u != nil {
			per := ""
			if r.Handovers > 0 {
				per = fmt.Sprintf(", %.0f ms per handover", u.CPUSeconds/float64(r.Handovers)*1000)
			}
			parts = append(parts, fmt.Sprintf("baton: %.1f MiB RSS max, %.2f s CPU (%.1f%% of a core%s), %d fds, %d goroutines",
				u.RSSMiB, u.CPUSeconds, u.CPUPercent, per, u.FDs, u.Goroutines))
		}
		parts = append(parts, fmt.Sprintf("final stop exited %d", r.ExitCode),
			fmt.Sprintf("others used %.1f%% of the CPUs%s", r.OthersCPU, busyMark(r.OthersCPU)))
		fmt.Fprintf(w, "%-11s %s\n", r.Scenario+":", strings.Join(parts, "; "))
	}

	for _, r := range rs {
		if !strings.HasPrefix(r.Scenario, "baton") {
			continue
		}
		fmt.Fprintf(w, "\n%s against the targets (%s):\n", r.Scenario, r.Request)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		check := func(what, have, target string, ok bool) {
			verdict := "met"
			if !ok {
				verdict = "MISSED"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", what, have, target, verdict)
		}
		check("failed requests", fmt.Sprint(r.Failed), "0", r.Failed == 0)
		if r.Acked > 0 {
			check("lost writes", fmt.Sprint(r.LostWrites), "0", r.LostWrites == 0)
		}
		check("throughput", fmt.Sprintf("%.3f× direct", r.RPSRatio), "≥ 0.97×", r.RPSRatio >= 0.97)
		check("p99 in handover windows", fmt.Sprintf("%.2f× direct p99", r.P99WindowRatio), "≤ 2×", r.P99WindowRatio <= 2)
		tw.Flush()
	}
}

// printJournal writes the -journal comparison: the journaled example
// against the unjournaled one, and the journal's targets.
func printJournal(w io.Writer, rs []*scenarioResult) {
	for _, r := range rs {
		if r.OthersCPU > busyLimit {
			fmt.Fprintf(w, "BUSY MACHINE: other processes took %.0f%% of the CPUs during %s; those figures are not a quiet machine's.\n\n", r.OthersCPU, r.Scenario)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tfailed\tlost writes\treq/s\t×unjournaled\tp50 ms\tp99 ms\t×unjournaled\tmax ms\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d of %d\t%.0f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			r.Scenario, r.Requests, r.Failed, r.LostWrites, r.Acked, r.RPS, r.RPSRatio, r.P50, r.P99, r.P99Ratio, r.Max)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rs {
		fmt.Fprintf(w, "%-12s the example used %.0f µs of CPU per request; final stop exited %d; others used %.1f%% of the CPUs%s\n",
			r.Scenario+":", r.AppCPU, r.ExitCode, r.OthersCPU, busyMark(r.OthersCPU))
	}
	for _, r := range rs {
		if r.Scenario != "journaled" {
			continue
		}
		fmt.Fprintln(w, "\njournaled against the targets (POST /orders):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		check := func(what, have, target string, ok bool) {
			verdict := "met"
			if !ok {
				verdict = "MISSED"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", what, have, target, verdict)
		}
		check("throughput", fmt.Sprintf("%.3f× unjournaled", r.RPSRatio), "≥ 0.9×", r.RPSRatio >= 0.9)
		check("p99 latency", fmt.Sprintf("%.2f× unjournaled", r.P99Ratio), "≤ 2×", r.P99Ratio <= 2)
		check("lost writes", fmt.Sprint(r.LostWrites), "0", r.LostWrites == 0)
		tw.Flush()
	}
}

func printScale(w io.Writer, rs []*scaleResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "programs\tone at a time: ready in ms\tall at once: ready in ms\treload ms\tall old exited ms\tbaton RSS MiB\tbaton CPU s\tfds\tgoroutines\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%.0f / %.0f\t%.0f / %.0f\t%.0f / %.0f\t%.0f / %.0f\t%.1f\t%.2f\t%d\t%d\t\n", r.Programs,
			r.One.Median, r.One.Max, r.All.Median, r.All.Max, r.AllReload.Median, r.AllReload.Max,
			r.AllDrained.Median, r.AllDrained.Max, r.Baton.RSSMiB, r.Baton.CPUSeconds, r.Baton.FDs, r.Baton.Goroutines)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(median / max; ready in: from a generation's start to READY=1, as baton reports it)")
}

func printSoak(w io.Writer, r *soakResult) {
	fmt.Fprintf(w, "soak: %d handovers in %.0f s under POST load from %d clients\n", r.Handovers, r.DurationS, r.Clients)
	fmt.Fprintf(w, "  others used %.1f%% of the CPUs meanwhile%s\n", r.OthersCPU, busyMark(r.OthersCPU))
	fmt.Fprintf(w, "  requests %d, failed %d (%s), lost writes %d of %d, replaced generations that did not exit 0: %d\n",
		r.Requests, r.Failed, kinds(r.FailedByKind), r.LostWrites, r.Acked, r.UncleanExits)
	fmt.Fprintf(w, "  trigger→serving %.0f ms median (max %.0f), window %.0f ms median (max %.0f)\n",
		r.TriggerToServing.Median, r.TriggerToServing.Max, r.Window.Median, r.Window.Max)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  baton\tfirst\tlast\tmax\t")
	fmt.Fprintf(tw, "  fds\t%.0f\t%.0f\t%.0f\t\n", r.FDs.First, r.FDs.Last, r.FDs.Max)
	fmt.Fprintf(tw, "  goroutines\t%.0f\t%.0f\t%.0f\t\n", r.Goroutines.First, r.Goroutines.Last, r.Goroutines.Max)
	fmt.Fprintf(tw, "  RSS MiB\t%.1f\t%.1f\t%.1f\t\n", r.RSSMiB.First, r.RSSMiB.Last, r.RSSMiB.Max)
	tw.Flush()
	fmt.Fprintf(w, "\n  sampled before the first handover and every %d after:\n", sampleEvery)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  handovers\tfds\tgoroutines\tRSS MiB\t")
	for _, s := range r.Samples {
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%.1f\t\n", s.Handovers, s.FDs, s.Goroutines, s.RSSMiB)
	}
	tw.Flush()
}

func busyMark(others float64) string {
	if others > busyLimit {
		return " (BUSY)"
	}
	return ""
}

// busyLimit is the share of the CPUs others may take before figures are
// flagged as those of a busy machine.
const busyLimit = 5

func busyNote(m machine) string {
	if m.Busy > busyLimit {
		return " (a busy machine: the figures are not those of a quiet one)"
	}
	return ""
}

// kinds formats failures by kind, most frequent first.
func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// printPeers writes the -peers systems as one table, then what failed.
func printPeers(w io.Writer, opt options, rs []*peerResult) {
	fmt.Fprintf(w, "load: %d keep-alive clients, no retries, %s, %v per system, one system after another, uninterrupted; %s each, evenly spread",
		opt.Clients, peerRequest, opt.Duration, plural(opt.Handovers, "restart"))
	if opt.Runs > 1 {
		fmt.Fprintf(w, "; %d runs, pooled", opt.Runs)
	}
	fmt.Fprint(w, "\n\n")
	printBusy(w, rs, func(r *peerResult) (string, float64) { return r.System, r.OthersCPU })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tversion\trestarts\trequests\tfailed\trefused\ttrigger→serving ms p50 / p99\trefused window ms p50 / max\tp99 ms\t×direct\treq/s\t×direct\t")
	for _, r := range rs {
		serving, window := "-", "-"
		if r.Restarts > 0 {
			serving = fmt.Sprintf("%.0f / %.0f", r.TriggerToServing.P50, r.TriggerToServing.P99)
			window = fmt.Sprintf("%.0f / %.0f", r.RefusedWindow.P50, r.RefusedWindow.Max)
		}
		v := r.Version
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%.2f\t%.2f\t%.0f\t%.3f\t\n",
			r.System, v, r.Restarts, r.Requests, r.Failed, r.Refused, serving, window, r.P99, r.P99Ratio, r.RPS, r.RPSRatio)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(trigger→serving: from the trigger to the first answer of the new process to a probe on a new connection;")
	fmt.Fprintln(w, " refused window: how long, per restart, those probes found nobody answering)")
	fmt.Fprintln(w)
	for _, r := range rs {
		fmt.Fprintf(w, "%-16s trigger: %s; failed by kind: %s; others used %.1f%% of the CPUs%s\n",
			r.System+":", r.Trigger, kinds(r.FailedByKind), r.OthersCPU, busyMark(r.OthersCPU))
	}
	fmt.Fprintln(w, "\ntrigger→serving p50 in parts, by the new process's clock (ms): to its initialisation, to its start-up, the start-up, after it")
	for _, r := range rs {
		if sp := r.Split; sp != nil {
			fmt.Fprintf(w, "%-16s %.2f + %.2f + %.2f + %.2f\n", r.System+":", sp.ToInit.P50, sp.ToStartup.P50, sp.Startup.P50, sp.After.P50)
		}
	}
}

// printDevLoop writes the -devloop systems as one table.
func printDevLoop(w io.Writer, rs []*devResult) {
	n := 0
	if len(rs) > 0 {
		n = rs[0].Changes
	}
	fmt.Fprintf(w, "dev loop: the same one-line change to the app's main.go, saved %s per system, the systems in turn\n\n", plural(n, "time"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tsave→serving ms p50 / max\tover go build ms\tbuilt in ms p50\tready in ms p50\trefused ms p50 / max\tbuild command\t")
	for _, r := range rs {
		over, build, ready, refused := "-", "-", "-", "-"
		if r.OverBuild != nil {
			over = fmt.Sprintf("%+.0f", *r.OverBuild)
		}
		if !strings.HasPrefix(r.System, "go-build") {
			refused = fmt.Sprintf("%.0f / %.0f", r.RefusedWindow.P50, r.RefusedWindow.Max)
		}
		if r.Build.N > 0 {
			build, ready = fmt.Sprintf("%.0f", r.Build.P50), fmt.Sprintf("%.0f", r.Ready.P50)
		}
		fmt.Fprintf(tw, "%s\t%.0f / %.0f\t%s\t%s\t%s\t%s\t%s\t\n", r.System, r.SaveToServing.P50, r.SaveToServing.Max, over, build, ready, refused, r.Command)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(go-build rows: the build alone, the app alone probed meanwhile; over go build: save→serving less the go build with the same -ldflags;")
	fmt.Fprintln(w, " built in and ready in: baton dev's own cycle line)")
}

// printBusy warns when other processes took more than busyLimit of the
// CPUs during any of rs, which name gives the name and that share of.
func printBusy[R any](w io.Writer, rs []R, name func(R) (string, float64)) {
	var busy []string
	for _, r := range rs {
		if n, cpu := name(r); cpu > busyLimit {
			busy = append(busy, fmt.Sprintf("%s %.0f%%", n, cpu))
		}
	}
	if len(busy) > 0 {
		fmt.Fprintf(w, "BUSY MACHINE: other processes took CPU during %s; those figures are not a quiet machine's.\n\n", strings.Join(busy, ", "))
	}
}
