// Package streams follows the event streams of examples/orders, Server-Sent
// Events and WebSocket, as a client that reconnects when the server says
// goodbye, for the tests and the benchmark. It records what a user would
// notice: which process served each connection, clean goodbyes, abnormal
// ends, events missed or repeated, and how long each reconnection took.
package streams

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Kind is a stream's protocol.
type Kind string

// The two streams of examples/orders.
const (
	SSE       Kind = "sse" // GET /orders/events
	WebSocket Kind = "ws"  // GET /orders/ws
)

// Config describes a client.
type Config struct {
	Kind Kind
	// Addr is the server, host:port.
	Addr string
	// Last is the sequence number to resume after; the client checks
	// that every later one arrives once, in order.
	Last int64
	// HTTP is the client for SSE, and for the WebSocket handshake;
	// default one with keep-alive, as a browser's.
	HTTP *http.Client
	// HTTPS makes the client speak https and wss; HTTP must then trust
	// the server's certificate.
	HTTPS bool
	// Backoff is the wait before reconnecting after an abnormal end.
	// Default 10 ms.
	Backoff time.Duration
	// Once ends the client after its first goodbye instead of
	// reconnecting: for a server that is not handed over.
	Once bool
}

// Stats is what a client saw.
type Stats struct {
	Kind     Kind
	Connects int   // connections that got their hello
	PIDs     []int // the pid of each hello, in order
	Goodbyes int   // clean ends: Close 1001, or the SSE goodbye event
	// Abnormal counts the other ends: a close code other than 1001,
	// a reset, EOF without a goodbye, a failed connect.
	Abnormal int
	Examples []string // of abnormal ends, a few
	Events   int64    // received
	Missed   int64    // sequence numbers skipped
	Repeated int64    // sequence numbers received again
	Last     int64
	// Reconnects holds, for each goodbye, the time until a hello from
	// another process: the client's view of moving to the next
	// generation.
	Reconnects []time.Duration
}

// Client is a running client.
type Client struct {
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	st      Stats
	changed chan struct{} // closed and replaced on every change
	bye     time.Time     // of the goodbye not yet followed by another process's hello
	byePID  int
}

// Follow starts a client; it runs until Stop or ctx is done.
func Follow(ctx context.Context, cfg Config) *Client {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 10 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Client{cfg: cfg, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	c.st.Kind, c.st.Last = cfg.Kind, cfg.Last
	go c.run(ctx)
	return c
}

// Stop ends the client and returns what it saw.
func (c *Client) Stop() Stats {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.PIDs = append([]int(nil), st.PIDs...)
	st.Reconnects = append([]time.Duration(nil), st.Reconnects...)
	return st
}

// Stats returns what the client saw so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.PIDs = append([]int(nil), st.PIDs...)
	st.Reconnects = append([]time.Duration(nil), st.Reconnects...)
	return st
}

// Wait waits up to timeout until cond holds for the stats, and reports
// whether it did.
func (c *Client) Wait(timeout time.Duration, cond func(Stats) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, ch := cond(c.st), c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		case <-c.done:
			return cond(c.Stats())
		}
	}
}

func (c *Client) update(f func(st *Stats)) {
	c.mu.Lock()
	f(&c.st)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		wait, err := c.session(ctx)
		if ctx.Err() != nil || (err == nil && c.cfg.Once) {
			return
		}
		if err != nil {
			c.update(func(st *Stats) {
				st.Abnormal++
				if len(st.Examples) < 5 {
					st.Examples = append(st.Examples, err.Error())
				}
			})
			wait = c.cfg.Backoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// message is what the streams carry.
type message struct {
	Type  string `json:"type"`
	PID   int    `json:"pid"`
	Seq   int64  `json:"seq"`
	Count int64  `json:"count"`
}

func (c *Client) hello(pid int) {
	c.update(func(st *Stats) {
		st.Connects++
		st.PIDs = append(st.PIDs, pid)
		if !c.bye.IsZero() && pid != c.byePID {
			st.Reconnects = append(st.Reconnects, time.Since(c.bye))
			c.bye = time.Time{}
		}
	})
}

func (c *Client) event(m message) error {
	if m.Count != m.Seq {
		return fmt.Errorf("event %d: count %d", m.Seq, m.Count)
	}
	c.update(func(st *Stats) {
		st.Events++
		switch {
		case m.Seq <= st.Last:
			st.Repeated++
		default:
			st.Missed += m.Seq - st.Last - 1
			st.Last = m.Seq
		}
	})
	return nil
}

func (c *Client) goodbye(pid int) {
	c.update(func(st *Stats) {
		st.Goodbyes++
		if c.bye.IsZero() {
			c.bye, c.byePID = time.Now(), pid
		}
	})
}

func (c *Client) last() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.Last
}

// session is one connection: it returns the wait before the next one
// after a goodbye, or the error that ended it otherwise.
func (c *Client) session(ctx context.Context) (time.Duration, error) {
	if c.cfg.Kind == WebSocket {
		return c.wsSession(ctx)
	}
	return c.sseSession(ctx)
}

func (c *Client) scheme(s string) string {
	if c.cfg.HTTPS {
		return s + "s"
	}
	return s
}

func (c *Client) wsSession(ctx context.Context) (time.Duration, error) {
	url := fmt.Sprintf("%s://%s/orders/ws?last_id=%d", c.scheme("ws"), c.cfg.Addr, c.last())
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: c.cfg.HTTP})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("ws dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	pid := 0
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusGoingAway {
				c.goodbye(pid)
				return 0, nil
			}
			return 0, fmt.Errorf("ws read: %w", err)
		}
		var m message
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, fmt.Errorf("ws message %q: %w", b, err)
		}
		switch m.Type {
		case "hello":
			pid = m.PID
			c.hello(pid)
		case "order":
			if err := c.event(m); err != nil {
				return 0, err
			}
		}
	}
}

func (c *Client) sseSession(ctx context.Context) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme("http")+"://"+c.cfg.Addr+"/orders/events", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(c.last(), 10))
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("sse connect: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("sse connect: %s", resp.Status)
	}
	br := bufio.NewReader(resp.Body)
	pid := 0
	var event, data string
	retry := time.Duration(-1)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("sse: stream ended without a goodbye: %w", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				data = value
			case "retry":
				if ms, err := strconv.Atoi(value); err == nil {
					retry = time.Duration(ms) * time.Millisecond
				}
			}
			continue
		}
		// A blank line dispatches the event.
		var m message
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return 0, fmt.Errorf("sse data %q: %w", data, err)
		}
		switch event {
		case "hello":
			pid = m.PID
			c.hello(pid)
		case "goodbye":
			if retry < 0 {
				return 0, errors.New("sse: goodbye without a retry hint")
			}
			c.goodbye(pid)
			// Read the end of the response, as a browser does, so that
			// the connection may be reused.
			io.Copy(io.Discard, br)
			return retry, nil
		default:
			if err := c.event(m); err != nil {
				return 0, err
			}
		}
		event, data = "", ""
	}
}
