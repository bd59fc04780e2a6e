package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"
)

// An event is an order written to the database. The history lives in the
// database, which every generation shares, not in a process: an order's
// rowid is its sequence number, and since the orders table is only ever
// appended to (SQLite gives a new row the largest rowid plus one, and
// writers take turns), the sequence numbers run 1, 2, 3, … without a gap,
// in commit order, whichever generation wrote the row. So the sequence
// number is also the running count of orders, and a client that
// reconnects with the last one it saw gets every order written after it,
// by the old generation or the new, from the rows after that rowid.
type event struct {
	Seq   int64  `json:"seq"`
	ID    string `json:"id"`
	Count int64  `json:"count"`
	json  []byte // encoded once, sent to every subscriber
}

func newEvent(seq int64, id string) event {
	e := event{Seq: seq, ID: id, Count: seq}
	e.json, _ = json.Marshal(struct {
		Type string `json:"type"`
		event
	}{"order", e})
	return e
}

// hello is the first message of each stream: who serves it.
func hello() []byte {
	b, _ := json.Marshal(gin.H{"type": "hello", "pid": os.Getpid(), "generation": child.Generation()})
	return b
}

// Defaults of the feed.
const (
	// feedInterval is how often the feed reads new rows: those the other
	// generation writes during a handover arrive within it. This
	// process's own writes wake it at once.
	feedInterval = 50 * time.Millisecond
	// keepEvents is how many recent events the feed keeps in memory for
	// subscribers that are behind; older ones are read from the database.
	keepEvents = 8192
	// pageSize bounds one read of the database.
	pageSize = 1000
	// retryMillis is the reconnect delay a goodbye suggests to SSE clients.
	retryMillis = 100
)

// feed reads the orders written to the database and hands them to the
// streams. One feed per process reads the database; the streams read the
// feed.
type feed struct {
	st       *store
	interval time.Duration
	wakeup   chan struct{}

	mu      sync.Mutex
	head    int64         // the highest sequence number read
	recent  []event       // the last events read, ascending; never modified in place
	changed chan struct{} // closed and replaced when events arrive
}

func newFeed(ctx context.Context, st *store) (*feed, error) {
	head, err := st.lastSeq(ctx)
	if err != nil {
		return nil, err
	}
	return &feed{st: st, interval: feedInterval, wakeup: make(chan struct{}, 1), head: head, changed: make(chan struct{})}, nil
}

// wake asks the feed to read now: this process has just written orders.
func (f *feed) wake() {
	select {
	case f.wakeup <- struct{}{}:
	default:
	}
}

// run reads new rows until ctx is done. It runs as a background task, so
// it stops only after the last stream ended.
func (f *feed) run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.wakeup:
		}
		for {
			f.mu.Lock()
			head := f.head
			f.mu.Unlock()
			evs, err := f.st.after(ctx, head, pageSize)
			if err != nil || len(evs) == 0 {
				break // a failed read is tried again at the next tick
			}
			f.publish(evs)
			if len(evs) < pageSize {
				break
			}
		}
	}
}

func (f *feed) publish(evs []event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recent = append(f.recent, evs...)
	if len(f.recent) > 2*keepEvents {
		f.recent = append([]event(nil), f.recent[len(f.recent)-keepEvents:]...)
	}
	f.head = evs[len(evs)-1].Seq
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *feed) lastSeq() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head
}

// next returns the events after seq, from memory or, for a subscriber
// further behind, from the database; or, when there are none yet, a
// channel that is closed when more arrive.
func (f *feed) next(ctx context.Context, seq int64) ([]event, <-chan struct{}, error) {
	f.mu.Lock()
	if seq >= f.head {
		ch := f.changed
		f.mu.Unlock()
		return nil, ch, nil
	}
	if len(f.recent) > 0 && f.recent[0].Seq <= seq+1 {
		i := sort.Search(len(f.recent), func(i int) bool { return f.recent[i].Seq > seq })
		evs := f.recent[i:]
		f.mu.Unlock()
		return evs, nil, nil
	}
	f.mu.Unlock()
	evs, err := f.st.after(ctx, seq, pageSize)
	return evs, nil, err
}

// follow passes the events after seq to send, in order, until ctx is
// done or send fails, and returns the last sequence number sent.
func (f *feed) follow(ctx context.Context, seq int64, send func(event) error) (int64, error) {
	for {
		evs, more, err := f.next(ctx, seq)
		if err != nil {
			return seq, err
		}
		for _, e := range evs {
			if err := send(e); err != nil {
				return seq, err
			}
			seq = e.Seq
		}
		if len(evs) > 0 {
			if ctx.Err() != nil {
				return seq, ctx.Err()
			}
			continue
		}
		select {
		case <-ctx.Done():
			return seq, ctx.Err()
		case <-more:
		}
	}
}

// lastEventID reads where a client resumes: the Last-Event-ID header (SSE
// clients send it on their own when they reconnect) or the last_id query
// parameter (WebSocket clients cannot set headers). Without either, a
// stream starts with the next order.
func lastEventID(r *http.Request, f *feed) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_id")
	}
	if v == "" {
		return f.lastSeq(), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("last event id %q: want a sequence number", v)
	}
	return n, nil
}

// orderEvents serves GET /orders/events, the orders written as a stream
// of Server-Sent Events. At the drain it ends the stream with a retry
// hint and the last id, and the client reconnects to the next
// generation.
func orderEvents(f *feed) gin.HandlerFunc {
	return func(c *gin.Context) {
		last, err := lastEventID(c.Request, f)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": err.Error()})
			return
		}
		drain := child.DrainContext(c.Request.Context())
		w := c.Writer
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, "event: hello\ndata: %s\n\n", hello())
		w.Flush()
		last, _ = f.follow(drain, last, func(e event) error {
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Seq, e.json); err != nil {
				return err
			}
			w.Flush()
			return nil
		})
		if errors.Is(context.Cause(drain), child.ErrDraining) {
			fmt.Fprintf(w, "event: goodbye\nid: %d\nretry: %d\ndata: {\"type\":\"goodbye\",\"last\":%d}\n\n", last, retryMillis, last)
			w.Flush()
		}
	}
}

// orderSocket serves GET /orders/ws, the same stream over a WebSocket.
// At the drain it closes with 1001 Going Away, and the client reconnects
// to the next generation with ?last_id= the last sequence number it saw.
func orderSocket(f *feed) gin.HandlerFunc {
	return func(c *gin.Context) {
		last, err := lastEventID(c.Request, f)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": err.Error()})
			return
		}
		conn, err := websocket.Accept(c.Writer, c.Request, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := conn.CloseRead(c.Request.Context()) // done when the client goes
		drain := child.DrainContext(ctx)           // and at the drain
		if err := conn.Write(ctx, websocket.MessageText, hello()); err != nil {
			return
		}
		last, _ = f.follow(drain, last, func(e event) error {
			return conn.Write(ctx, websocket.MessageText, e.json)
		})
		if errors.Is(context.Cause(drain), child.ErrDraining) {
			conn.Close(websocket.StatusGoingAway, "restarting: reconnect with last_id="+strconv.FormatInt(last, 10))
		}
	}
}
