package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/streams"
)

// longlivedOptions are the flags of -longlived.
type longlivedOptions struct {
	WS, SSE   int           // clients of each stream
	Handovers int           // in a row, each once every client is back
	Rate      int           // POST orders per second, about
	Pause     time.Duration // between a handover and the next
}

// pctStats summarises durations in milliseconds.
type pctStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func pcts(ds []time.Duration) pctStats {
	sortDurations(ds)
	return pctStats{N: len(ds), P50: ms(percentile(ds, 50)), P99: ms(percentile(ds, 99)), Max: ms(percentile(ds, 100))}
}

// streamResult is what the clients of one kind saw.
type streamResult struct {
	Clients  int      `json:"clients"`
	Connects int      `json:"connects"`
	Goodbyes int      `json:"goodbyes"` // Close 1001, or the SSE goodbye
	Abnormal int      `json:"abnormal"` // any other end: 1006, reset, EOF
	Examples []string `json:"abnormal_examples,omitempty"`
	Events   int64    `json:"events"`
	// Missed counts sequence numbers a client skipped, and those it had
	// not received once the load stopped and every order was written.
	Missed   int64 `json:"missed"`
	Repeated int64 `json:"repeated"`
	// Reconnect: from a goodbye until a hello from the next generation.
	Reconnect pctStats `json:"reconnect_ms"`
}

// longlivedResult is the outcome of -longlived.
type longlivedResult struct {
	Mode      string  `json:"mode"` // "longlived"
	Handovers int     `json:"handovers"`
	Rate      int     `json:"rate"`
	DurationS float64 `json:"duration_s"`
	// The POST load.
	Requests     int64            `json:"requests"`
	Failed       int64            `json:"failed"`
	FailedByKind map[string]int64 `json:"failed_by_kind"`
	Acked        int              `json:"acked"`
	LostWrites   int              `json:"lost_writes"`

	WS  streamResult `json:"ws"`
	SSE streamResult `json:"sse"`

	// OldLifetime: from the new generation's READY until the old
	// generation's process was gone. TriggerToServing: from the reload
	// request until the new generation was ready.
	OldLifetime      pctStats `json:"old_lifetime_ms"`
	TriggerToServing pctStats `json:"trigger_to_serving_ms"`
	OldExitCodes     []int    `json:"old_exit_codes"`
	ExitCode         int      `json:"exit_code"`
	OthersCPU        float64  `json:"others_cpu_percent"`
	Machine          *machine `json:"machine,omitempty"`
}

// longlived connects WebSocket and SSE clients to the example under
// baton, runs a steady POST load, and hands the example over again and
// again: every client must get its goodbye, reconnect to the new
// generation and miss no event.
func longlived(ctx context.Context, e *env, opt longlivedOptions) (*longlivedResult, error) {
	dir, err := e.dir("longlived")
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "orders.db")
	e.logf("longlived: %d WebSocket and %d SSE clients, %s, POST load of about %d orders/s",
		opt.WS, opt.SSE, plural(opt.Handovers, "handover"), opt.Rate)
	b, err := startBaton(ctx, e, dir, []batonProgram{{name: "orders", db: db, addr: "127.0.0.1:0"}})
	if err != nil {
		return nil, err
	}
	defer b.kill()

	var clients []*streams.Client
	stopClients := func() {
		for _, c := range clients {
			c.Stop()
		}
	}
	defer stopClients()
	for i := 0; i < opt.WS+opt.SSE; i++ {
		cfg := streams.Config{Kind: streams.WebSocket, Addr: b.addr(), HTTP: &http.Client{Transport: &http.Transport{}}}
		if i >= opt.WS {
			cfg.Kind = streams.SSE
		}
		clients = append(clients, streams.Follow(ctx, cfg))
	}
	sts, err := b.ctl.status(ctx)
	if err != nil {
		return nil, err
	}
	if err := allServedBy(clients, sts[0].PID); err != nil {
		return nil, err
	}
	e.logf("longlived: %d clients connected", len(clients))

	const postClients = 4
	load := loadgen.Start(ctx, loadgen.Config{Addr: b.addr(), Clients: postClients,
		IDPrefix: fmt.Sprintf("longlived-%d", time.Now().UnixNano()),
		Pace:     time.Second * postClients / time.Duration(max(1, opt.Rate))})
	share := startCPUShare()
	start := time.Now()
	r := &longlivedResult{Mode: "longlived", Handovers: opt.Handovers, Rate: opt.Rate, OldExitCodes: []int{}}
	var lifetimes, serving []time.Duration
	for i := 1; i <= opt.Handovers; i++ {
		if err := sleepUntil(ctx, time.Now().Add(opt.Pause)); err != nil {
			load.Stop()
			return nil, err
		}
		h, err := b.handover(ctx)
		if err != nil {
			load.Stop()
			return nil, fmt.Errorf("handover %d: %w", i, err)
		}
		lifetimes = append(lifetimes, h.end.Sub(h.serving))
		serving = append(serving, h.serving.Sub(h.trigger))
		r.OldExitCodes = append(r.OldExitCodes, h.oldCode)
		sts, err := b.ctl.status(ctx)
		if err != nil {
			load.Stop()
			return nil, err
		}
		if err := allServedBy(clients, sts[0].PID); err != nil {
			load.Stop()
			return nil, fmt.Errorf("handover %d: %w", i, err)
		}
		if i%5 == 0 || i == opt.Handovers {
			e.logf("longlived: %d handovers, %d orders acknowledged, %d requests failed", i, load.Acked(), load.Failures())
		}
	}
	res := load.Stop()
	r.DurationS = round(time.Since(start).Seconds(), 1)
	r.OthersCPU = share.othersPercent()
	r.Requests, r.Failed, r.FailedByKind, r.Acked = res.Requests, res.FailedTotal(), res.Failed, len(res.Acked)

	// Every acknowledged order gets written, with sequence numbers 1 to
	// the number of orders (the ids are unique): each client should
	// reach it.
	final := int64(len(res.Acked))
	deadline := time.Now().Add(exitTimeout)
	for _, c := range clients {
		c.Wait(time.Until(deadline), func(st streams.Stats) bool { return st.Last >= final })
	}
	var wsRe, sseRe []time.Duration
	for i, c := range clients {
		st := c.Stop()
		sr, re := &r.WS, &wsRe
		if i >= opt.WS {
			sr, re = &r.SSE, &sseRe
		}
		sr.Clients++
		sr.Connects += st.Connects
		sr.Goodbyes += st.Goodbyes
		sr.Abnormal += st.Abnormal
		if len(sr.Examples) < 5 {
			sr.Examples = append(sr.Examples, st.Examples...)
		}
		sr.Events += st.Events
		sr.Missed += st.Missed + max(0, final-st.Last)
		sr.Repeated += st.Repeated
		*re = append(*re, st.Reconnects...)
	}
	clients = nil
	r.WS.Reconnect, r.SSE.Reconnect = pcts(wsRe), pcts(sseRe)
	r.OldLifetime, r.TriggerToServing = pcts(lifetimes), pcts(serving)

	if r.ExitCode, err = b.stop(); err != nil {
		return nil, err
	}
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		return nil, fmt.Errorf("lost writes: %w", err)
	}
	r.LostWrites = len(missing)
	return r, nil
}

// allServedBy waits until every client has had a hello from pid.
func allServedBy(clients []*streams.Client, pid int) error {
	deadline := time.Now().Add(startTimeout)
	for _, c := range clients {
		if !c.Wait(time.Until(deadline), func(st streams.Stats) bool {
			return len(st.PIDs) > 0 && st.PIDs[len(st.PIDs)-1] == pid
		}) {
			st := c.Stats()
			return fmt.Errorf("a %s client never reached pid %d: %d connections, served by %v, abnormal ends %v", st.Kind, pid, st.Connects, st.PIDs, st.Examples)
		}
	}
	return nil
}

func printLonglived(w io.Writer, r *longlivedResult) {
	if r.OthersCPU > busyLimit {
		fmt.Fprintf(w, "BUSY MACHINE: other processes took %.0f%% of the CPUs; these are not a quiet machine's figures.\n\n", r.OthersCPU)
	}
	fmt.Fprintf(w, "longlived: %s in %.1f s; POST load of about %d orders/s: %d requests, %d failed, %d of %d acknowledged writes lost\n\n",
		plural(r.Handovers, "handover"), r.DurationS, r.Rate, r.Requests, r.Failed, r.LostWrites, r.Acked)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stream\tclients\tconnections\tclean goodbyes\tabnormal closes\tevents\tmissed\trepeated\treconnect p50 ms\tp99 ms\tmax ms\t")
	for _, s := range []struct {
		name string
		r    streamResult
	}{{"WebSocket", r.WS}, {"SSE", r.SSE}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n", s.name, s.r.Clients, s.r.Connects, s.r.Goodbyes,
			s.r.Abnormal, s.r.Events, s.r.Missed, s.r.Repeated, s.r.Reconnect.P50, s.r.Reconnect.P99, s.r.Reconnect.Max)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nold generation's lifetime after its successor was ready: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
		r.OldLifetime.P50, r.OldLifetime.P99, r.OldLifetime.Max)
	fmt.Fprintf(w, "trigger→serving: p50 %.0f ms, max %.0f ms; old generations' exit statuses: %s; others used %.1f%% of the CPUs\n",
		r.TriggerToServing.P50, r.TriggerToServing.Max, exitSummary(r.OldExitCodes), r.OthersCPU)
	for _, s := range []streamResult{r.WS, r.SSE} {
		for _, ex := range s.Examples {
			fmt.Fprintf(w, "abnormal: %s\n", ex)
		}
	}
	verdict := "met"
	if r.WS.Abnormal+r.SSE.Abnormal > 0 || r.WS.Missed+r.SSE.Missed > 0 {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "targets (0 abnormal closes, 0 events missed): %s\n", verdict)
}

// exitSummary counts exit statuses: "20 × 0".
func exitSummary(codes []int) string {
	n := map[int]int{}
	for _, c := range codes {
		n[c]++
	}
	var keys []int
	for k := range n {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d × %d", n[k], k))
	}
	return strings.Join(parts, ", ")
}
