package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-run/baton/child"
	"github.com/hashicorp/go-hclog"
)

func TestPostOrder_validation(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "orders.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	srv, err := child.New(child.Config{Addr: "127.0.0.1:0", Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	w := child.NewBatchWriter(child.BatchConfig[order]{Flush: st.insert})
	events, err := newFeed(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(srv, st, w, events)

	for _, tc := range []struct {
		body     string
		wantCode int
		wantBody string
	}{
		{`{"id":"a1","item":"tea","qty":2}`, 202, `{"id":"a1"}`},
		{`{"id":"a1","item":"tea","qty":2}`, 202, `{"id":"a1"}`}, // same id again: one row
		{`{"id":"a2","item":"tea","qty":1}`, 202, `{"id":"a2"}`},
		{`{"id":"a3","item":"tea"`, 400, `malformed JSON`},
		{`{"id":"a3","item":"tea","qty":"2"}`, 400, `malformed JSON`},
		{`{"item":"tea","qty":1}`, 400, `\"id\" is required`},
		{`{"id":"a3","qty":1}`, 400, `\"item\" is required`},
		{`{"id":"a3","item":"tea","qty":0}`, 400, `\"qty\" must be at least 1`},
		{`{"id":"a3","item":"tea","qty":1} {}`, 400, `more than one value`},
	} {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(tc.body)))
		if rec.Code != tc.wantCode || !strings.Contains(rec.Body.String(), tc.wantBody) {
			t.Errorf("POST %s: want %d %s, have %d %s", tc.body, tc.wantCode, tc.wantBody, rec.Code, rec.Body)
		}
	}
	if w.Pending() != 3 {
		t.Fatalf("queued: want 3 (the 400s queue nothing), have %d", w.Pending())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/count", nil))
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"count":2}` {
		t.Fatalf("count: want {\"count\":2}, have %d %s", rec.Code, rec.Body)
	}
	// The writer is closed: the door answers 503 and queues nothing.
	rec = httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"id":"late","item":"tea","qty":1}`)))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST after close: want 503, have %d %s", rec.Code, rec.Body)
	}
}
