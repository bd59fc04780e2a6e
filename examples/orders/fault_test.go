package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/hashicorp/go-hclog"
)

func TestParseFault(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"", "", ""},
		{"  ", "", ""},
		{"errors=10%", "errors=10%", ""},
		{"errors=0.5%", "errors=0.5%", ""},
		{"errors=100%", "errors=100%", ""},
		{"latency=50ms", "latency=50ms", ""},
		{"crash=2s", "crash=2s", ""},
		{"errors=5%, latency=20ms,crash=1m", "errors=5%,latency=20ms,crash=1m0s", ""},
		{"errors=10", "", "want a share"},
		{"errors=0%", "", "want a share"},
		{"errors=101%", "", "want a share"},
		{"errors=x%", "", "want a share"},
		{"latency=fast", "", "want a duration"},
		{"crash=-1s", "", "want a duration"},
		{"crash=0s", "", "want a duration"},
		{"crash", "", "want key=value"},
		{"errors=10%,", "", "want key=value"},
		{"slow=1s", "", `unknown fault "slow"`},
		{"crash=1s,crash=2s", "", "crash given twice"},
	} {
		f, err := parseFault(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "ORDERS_FAULT: ") {
				t.Errorf("%q: want an error with %q, have %v", tc.in, tc.err, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.want == "":
			if f != nil || f.handler() != nil {
				t.Errorf("%q: want no fault and no handler, have %v", tc.in, f)
			}
		case f.String() != tc.want:
			t.Errorf("%q: want %s, have %s", tc.in, tc.want, f)
		}
	}
}

// faultRouter is the example's router with a fault, on a fresh database.
func faultRouter(t *testing.T, spec string) (http.Handler, *child.BatchWriter[order]) {
	t.Helper()
	flt, err := parseFault(spec)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStore(filepath.Join(t.TempDir(), "orders.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	srv, err := child.New(child.Config{Addr: "127.0.0.1:0", Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	w := child.NewBatchWriter(child.BatchConfig[order]{Flush: st.insert})
	events, err := newFeed(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return newRouter(srv, st, w, events, flt), w
}

func post(r http.Handler, id string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"id":"`+id+`","item":"tea","qty":1}`)))
	return rec
}

// errors=10%: exactly every tenth POST /orders is answered 500, and an
// order answered 500 is not queued; other routes are untouched.
func TestFault_errorsShare(t *testing.T) {
	r, w := faultRouter(t, "errors=10%")
	var failed []int
	for i := 1; i <= 100; i++ {
		rec := post(r, fmt.Sprint("o-", i))
		switch rec.Code {
		case http.StatusInternalServerError:
			if !strings.Contains(rec.Body.String(), "ORDERS_FAULT") {
				t.Fatalf("POST %d: a 500 that does not name the fault: %s", i, rec.Body)
			}
			failed = append(failed, i)
		case http.StatusAccepted:
		default:
			t.Fatalf("POST %d: want 202 or 500, have %d %s", i, rec.Code, rec.Body)
		}
	}
	if have := fmt.Sprint(failed); have != "[10 20 30 40 50 60 70 80 90 100]" {
		t.Fatalf("want every tenth POST answered 500, have %s", have)
	}
	if w.Pending() != 90 {
		t.Fatalf("queued: want the 90 orders answered 202, have %d", w.Pending())
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/count", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /orders/count: want 200, have %d", rec.Code)
	}
}

// latency=…: each POST /orders waits at least that long (a lower bound,
// which a slow machine cannot break), and one whose client has gone
// stops waiting.
func TestFault_latency(t *testing.T) {
	r, w := faultRouter(t, "latency=40ms")
	start := time.Now()
	if rec := post(r, "slow-1"); rec.Code != http.StatusAccepted {
		t.Fatalf("want 202, have %d %s", rec.Code, rec.Body)
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Fatalf("want the POST to wait the 40ms asked, it took %v", took)
	}

	r, w = faultRouter(t, "latency=1h")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"id":"gone","item":"tea","qty":1}`)).WithContext(ctx))
	}()
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("a POST whose client has gone still waits out its latency")
	}
	if w.Pending() != 0 {
		t.Fatalf("an order whose client went during the latency was queued")
	}
}

// crash=…: the real process serves, then exits 2 on its own, and says
// why; a bad ORDERS_FAULT stops it at start with the reason.
func TestFault_crashAndBadValue(t *testing.T) {
	dir := t.TempDir()
	p, addr := startOrders(t, "orders", proctest.Self("orders", "ORDERS_FAULT=crash=300ms",
		"ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+filepath.Join(dir, "orders.db")))
	if h := getHealth(t, addr); h.Status != "ok" {
		t.Fatalf("before the crash: %+v", h)
	}
	if code := exitCode(t, p); code != faultCrashStatus {
		t.Fatalf("exit status: want %d, have %d; output:\n%s", faultCrashStatus, code, p.Output())
	}
	if !strings.Contains(p.Output(), "crashing as ORDERS_FAULT asks") {
		t.Fatalf("no reason in the output:\n%s", p.Output())
	}

	bad := proctest.Start(t, proctest.Self("orders", "ORDERS_FAULT=errors=ten",
		"ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+filepath.Join(dir, "bad.db")))
	if code := exitCode(t, bad); code != child.ExitFailure || !strings.Contains(bad.Output(), "bad ORDERS_FAULT") {
		t.Fatalf("a bad value: want exit %d with the reason, have %d:\n%s", child.ExitFailure, code, bad.Output())
	}
}
