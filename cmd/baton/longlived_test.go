package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/streams"
	"github.com/baton-run/baton/internal/testtls"
)

// handover sends baton SIGHUP and waits until generation gen serves and
// gen-1 has exited; it returns the log line of gen-1's exit.
func handover(t *testing.T, baton *proctest.Proc, gen int) string {
	t.Helper()
	baton.Signal(syscall.SIGHUP)
	if _, ok := baton.Out.Wait("handover: new generation ready", gen-1, waitLong); !ok {
		t.Fatalf("handover %d did not complete; log:\n%s", gen-1, baton.Output())
	}
	return baton.WaitOutput(fmt.Sprintf("generation exited: program=orders gen=%d ", gen-1), waitLong)
}

// WebSocket and SSE clients of examples/orders, connected across three
// handovers under POST load: at each handover every client gets its
// goodbye (Close 1001, or the SSE goodbye with retry: and the last id),
// reconnects to the new generation's pid, and resumes where it was:
// no abnormal close, no event missed or repeated, every old generation
// exits 0.
func TestLongLived_streamsMoveToTheNextGeneration(t *testing.T) {
	baton, _, _, addr := runOrders(t)
	var clients []*streams.Client
	for _, kind := range []streams.Kind{streams.WebSocket, streams.SSE, streams.WebSocket, streams.SSE} {
		clients = append(clients, streams.Follow(context.Background(), streams.Config{Kind: kind, Addr: addr, Last: 0}))
	}
	defer func() {
		for _, c := range clients {
			c.Stop()
		}
	}()
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 2})

	const handovers = 3
	for gen := 2; gen <= handovers+1; gen++ {
		serving := childPIDs(baton.Output())[gen-2]
		for _, c := range clients {
			want := int64(load.Acked() / 2)
			if !c.Wait(waitLong, func(st streams.Stats) bool {
				return st.Last >= want && len(st.PIDs) > 0 && st.PIDs[len(st.PIDs)-1] == serving
			}) {
				t.Fatalf("before handover %d: %+v; log:\n%s", gen-1, c.Stats(), baton.Output())
			}
		}
		if line := handover(t, baton, gen); !strings.Contains(line, `status="exit status 0"`) {
			t.Fatalf("generation %d: want exit status 0, have %s", gen-1, line)
		}
		pid := childPIDs(baton.Output())[gen-1]
		for _, c := range clients {
			if !c.Wait(waitLong, func(st streams.Stats) bool { return slices.Contains(st.PIDs, pid) }) {
				t.Fatalf("after handover %d: no hello from the new generation's pid %d: %+v", gen-1, pid, c.Stats())
			}
		}
	}
	res := load.Stop()
	if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	// Order ids are unique, so the last sequence number is the number
	// of orders acknowledged, once they are all written.
	final := int64(len(res.Acked))
	pids := childPIDs(baton.Output())
	for _, c := range clients {
		if !c.Wait(waitLong, func(st streams.Stats) bool { return st.Last >= final }) {
			t.Fatalf("want events up to %d, have %+v", final, c.Stats())
		}
		st := c.Stop()
		if st.Abnormal != 0 || st.Missed != 0 || st.Repeated != 0 || st.Last != final {
			t.Fatalf("%s: want no abnormal end and every event once up to %d, have %+v", st.Kind, final, st)
		}
		if st.Goodbyes != handovers || len(st.Reconnects) != handovers {
			t.Fatalf("%s: want one goodbye and one reconnection at each of %d handovers, have %+v", st.Kind, handovers, st)
		}
		// Served by each generation in turn, once: an SSE client's
		// keep-alive connection is not reused to reach the draining one.
		if !slices.Equal(st.PIDs, pids) {
			t.Fatalf("%s: want served by %v in turn, have %v", st.Kind, pids, st.PIDs)
		}
		t.Logf("%s: %d events, %d goodbyes, reconnects %v", st.Kind, st.Events, st.Goodbyes, st.Reconnects)
	}
	baton.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton: want exit 0, have %d %s; log:\n%s", code, sig, baton.Output())
	}
}

// HTTP/2 over TLS across handovers, with Go's HTTP/2 client: POST
// streams under load and an SSE stream are in flight at each drain;
// GOAWAY moves the clients to the new generation and not one stream
// fails. The SSE stream ends with its goodbye and resumes, over HTTP/2,
// with nothing missed.
func TestLongLived_http2StreamsAcrossHandovers(t *testing.T) {
	orders := buildOrders(t)
	dir := t.TempDir()
	cert := testtls.New(t)
	certFile, keyFile := cert.WriteFiles(t, dir)
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
program "orders" {
  command = [%q]
  env     = { ORDERS_DB = "orders.db", ORDERS_TLS_CERT = %q, ORDERS_TLS_KEY = %q }
  listener "http" { address = "127.0.0.1:0" }
}
`, orders, certFile, keyFile)), 0o644)
	baton := startBaton(t, "run", "-config", cfg)
	m := reAddr.FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))
	if m == nil {
		t.Fatalf("no address in the log:\n%s", baton.Output())
	}
	addr := m[1]
	baton.WaitOutput("ready: program=orders gen=1", waitLong)

	h2 := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: cert.ClientConfig(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true) // HTTP/2 only: a fallback to HTTP/1.1 fails
		return &http.Client{Transport: tr}
	}
	sse := streams.Follow(context.Background(), streams.Config{Kind: streams.SSE, Addr: addr, HTTPS: true, HTTP: h2()})
	defer sse.Stop()

	// POST load: 8 clients, 2 HTTP/2 connections of 4 streams each.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	pool := []*http.Client{h2(), h2()}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int, c *http.Client) {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"id":"h2-%d-%d","item":"tea","qty":1}`, i, n)
				req, _ := http.NewRequestWithContext(context.Background(), "POST", "https://"+addr+"/orders", bytes.NewReader([]byte(body)))
				resp, err := c.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted || resp.ProtoMajor != 2 {
						err = fmt.Errorf("%s %s", resp.Proto, resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}(i, pool[i%2])
	}

	for gen := 2; gen <= 4; gen++ {
		if !sse.Wait(waitLong, func(st streams.Stats) bool { return st.Connects >= gen-1 && st.Events >= int64(50*(gen-1)) }) {
			t.Fatalf("before handover %d: SSE %+v", gen-1, sse.Stats())
		}
		if line := handover(t, baton, gen); !strings.Contains(line, `status="exit status 0"`) {
			t.Fatalf("generation %d: want exit status 0, have %s", gen-1, line)
		}
	}
	stop()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d HTTP/2 requests failed, e.g. %v", n, n+ok.Load(), firstErr)
	}
	pid := childPIDs(baton.Output())[3]
	if !sse.Wait(waitLong, func(st streams.Stats) bool { return slices.Contains(st.PIDs, pid) }) {
		t.Fatalf("SSE over HTTP/2 never reached generation 4 (pid %d): %+v", pid, sse.Stats())
	}
	st := sse.Stop()
	if st.Abnormal != 0 || st.Missed != 0 || st.Repeated != 0 || st.Goodbyes < 3 {
		t.Fatalf("SSE over HTTP/2: want 3 goodbyes, no abnormal end, nothing missed, have %+v", st)
	}
	t.Logf("%d HTTP/2 requests, 0 failed; SSE: %d events, reconnects %v", ok.Load(), st.Events, st.Reconnects)
	baton.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton: want exit 0, have %d %s; log:\n%s", code, sig, baton.Output())
	}
}
