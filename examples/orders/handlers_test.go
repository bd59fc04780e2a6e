package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-run/baton/child"
	"github.com/baton-run/baton/internal/proctest"
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
	r := newRouter(srv, st, w, events, nil)

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

// A full disk under the journal: the order cannot be made durable, so it
// is answered 503, never 202; once there is room again, 202. Every order
// answered 202 is written, and no other.
func TestPostOrder_fullDiskAnswers503(t *testing.T) {
	disk := proctest.Tmpfs(t, 256<<10)
	st, err := openStore(filepath.Join(t.TempDir(), "orders.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	srv, err := child.New(child.Config{Addr: "127.0.0.1:0", Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := child.OpenBatchWriter(child.BatchConfig[order]{Flush: st.insert, Journal: filepath.Join(disk, "journal"), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	events, err := newFeed(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(srv, st, w, events, nil)
	post := func(id string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"id":"`+id+`","item":"tea","qty":1}`)))
		return rec
	}

	filler := proctest.Fill(t, disk)
	accepted := 0
	var full *httptest.ResponseRecorder
	for i := 0; i < 100000; i++ {
		// The segment's last page may still hold a few orders.
		if rec := post(fmt.Sprintf("before-%d", i)); rec.Code != http.StatusAccepted {
			full = rec
			break
		}
		accepted++
	}
	if full == nil || full.Code != http.StatusServiceUnavailable || !strings.Contains(full.Body.String(), "no space left on device") {
		t.Fatalf("POST on a full disk: want 503 naming the full disk, have %v", full)
	}
	os.Remove(filler)
	if rec := post("after"); rec.Code != http.StatusAccepted {
		t.Fatalf("POST once there is room: want 202, have %d %s", rec.Code, rec.Body)
	}
	accepted++

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := st.count(context.Background()); err != nil || n != accepted {
		t.Fatalf("want the %d orders answered 202 written, have %d (%v)", accepted, n, err)
	}
}

func TestJournalDir(t *testing.T) {
	for _, tc := range []struct{ db, env, want string }{
		{"orders.db", "", "orders.journal"},
		{"/var/lib/shop/orders.sqlite", "", "/var/lib/shop/orders.journal"},
		{"data/orders", "", "data/orders.journal"},
		{"orders.db", "off", ""},
		{"orders.db", "/srv/journal", "/srv/journal"},
	} {
		if have := journalDir(tc.db, tc.env); have != tc.want {
			t.Errorf("journalDir(%q, %q): want %q, have %q", tc.db, tc.env, tc.want, have)
		}
	}
}
