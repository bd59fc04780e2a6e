// Package loadgen sends HTTP/1.1 load from keep-alive clients and records
// every outcome, for the tests and the benchmark. It speaks HTTP itself
// over net.Conn so that nothing retries behind its back: net/http's
// Transport silently replays some requests on a connection the server
// closed, which would hide exactly the failures baton must not cause.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config describes a load.
type Config struct {
	// Addr is the server: "host:port", or "unix:/path".
	Addr string
	// Clients is the number of concurrent keep-alive connections.
	Clients int
	// Get sends GET Path instead of POSTing orders.
	Get  bool
	Path string // default "/orders", or "/healthz" with Get
	// MaxRequests bounds the requests of the whole load (0: no bound
	// beyond the context).
	MaxRequests int64
	// Timeout bounds each request. Default 10 s.
	Timeout time.Duration
	// IDPrefix makes order ids unique across loads. Default a value
	// derived from the time and pid.
	IDPrefix string
	// Samples records each request's start and latency (for the
	// benchmark's percentiles); the tests leave it off.
	Samples bool
	// Pace, when set, is the pause of each client after each request:
	// a steady load instead of as fast as the server answers.
	Pace time.Duration
	// PerConnection, when set, is how many requests a client sends on a
	// connection before it closes it (with "Connection: close" on the
	// last) and dials a new one: traffic that reaches every process
	// accepting on a shared socket.
	PerConnection int
	// Observe, when set, is called with each request's sample as soon as
	// it is answered or failed, from the client's goroutine: a live view
	// of the load, for a harness that reacts to what clients see. It
	// must be quick and safe for concurrent use.
	Observe func(Sample)
}

// Sample is one request: when it started, relative to the load's start,
// and how long it took.
type Sample struct {
	At      time.Duration // since the load started
	Latency time.Duration // until the whole response was read
	OK      bool          // 2xx
	Status  int           // the response's status code; 0 when the request failed without one
}

// Result is what a load saw.
type Result struct {
	Requests int64            // sent, whatever their outcome
	OK       int64            // 2xx responses
	Dials    int64            // connections opened
	Failed   map[string]int64 // by kind: connect, write, read, timeout, status_NNN
	// Acked holds the ids the server answered 202 for (POST only).
	Acked    []string
	Samples  []Sample          // with Config.Samples, by start time
	Elapsed  time.Duration     // from Start to Stop
	Examples map[string]string // one error message per kind
}

// FailedTotal sums Failed.
func (r *Result) FailedTotal() int64 {
	var n int64
	for _, v := range r.Failed {
		n += v
	}
	return n
}

// Load is a running load.
type Load struct {
	cfg    Config
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}
	sent   atomic.Int64
	acked  atomic.Int64
	failed atomic.Int64

	waitMu   sync.Mutex
	waiters  []waiter // WaitAcked calls, woken by ack
	nwaiters atomic.Int32
	mu       sync.Mutex
	clients  []*client
	res      *Result
}

// Start begins the load; it runs until ctx is done, MaxRequests were sent
// or Stop is called.
func Start(ctx context.Context, cfg Config) *Load {
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Path == "" {
		cfg.Path = "/orders"
		if cfg.Get {
			cfg.Path = "/healthz"
		}
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(os.Getpid())
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cfg: cfg, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		c := &client{l: l, id: i, failed: map[string]int64{}, examples: map[string]string{}}
		l.clients = append(l.clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx)
		}()
	}
	go func() {
		wg.Wait()
		close(l.done)
	}()
	return l
}

// Acked returns how many requests were answered 2xx so far.
func (l *Load) Acked() int64 { return l.acked.Load() }

// Failures returns how many requests failed so far.
func (l *Load) Failures() int64 { return l.failed.Load() }

// WaitAcked waits until n requests were answered 2xx, the load ended, or
// timeout passed, and reports whether n was reached.
func (l *Load) WaitAcked(n int64, timeout time.Duration) bool {
	reached := make(chan struct{})
	l.waitMu.Lock()
	if l.acked.Load() >= n {
		l.waitMu.Unlock()
		return true
	}
	l.waiters = append(l.waiters, waiter{n, reached})
	l.nwaiters.Add(1)
	l.waitMu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-reached:
		return true
	case <-l.done:
	case <-t.C:
	}
	l.waitMu.Lock()
	for i, w := range l.waiters {
		if w.c == reached {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			l.nwaiters.Add(-1)
			break
		}
	}
	l.waitMu.Unlock()
	return l.acked.Load() >= n
}

type waiter struct {
	n int64
	c chan struct{}
}

// ack counts a 2xx answer and wakes the waiters it satisfies; without
// waiters it costs one atomic load more.
func (l *Load) ack() {
	n := l.acked.Add(1)
	if l.nwaiters.Load() == 0 {
		return
	}
	l.waitMu.Lock()
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if n >= w.n {
			close(w.c)
			l.nwaiters.Add(-1)
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
	l.waitMu.Unlock()
}

// Done is closed when every client has stopped.
func (l *Load) Done() <-chan struct{} { return l.done }

// Stop ends the load, waits for the clients and returns the result. The
// request each client has in flight is completed first, so that its
// outcome is known.
func (l *Load) Stop() *Result {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.res != nil {
		return l.res
	}
	r := &Result{Failed: map[string]int64{}, Examples: map[string]string{}, Elapsed: time.Since(l.start)}
	for _, c := range l.clients {
		r.Requests += c.requests
		r.OK += c.ok
		r.Dials += c.dials
		r.Acked = append(r.Acked, c.acked...)
		r.Samples = append(r.Samples, c.samples...)
		for k, v := range c.failed {
			r.Failed[k] += v
		}
		for k, v := range c.examples {
			r.Examples[k] = v
		}
	}
	sort.Slice(r.Samples, func(i, j int) bool { return r.Samples[i].At < r.Samples[j].At })
	l.res = r
	return r
}

type client struct {
	l        *Load
	id       int
	conn     net.Conn
	br       *bufio.Reader
	seq      int
	requests int64
	ok       int64
	dials    int64
	acked    []string
	failed   map[string]int64
	examples map[string]string
	samples  []Sample
}

func (c *client) run(ctx context.Context) {
	defer c.close()
	var buf bytes.Buffer
	for ctx.Err() == nil {
		if max := c.l.cfg.MaxRequests; max > 0 && c.l.sent.Add(1) > max {
			return
		}
		c.seq++
		id := fmt.Sprintf("%s-%d-%d", c.l.cfg.IDPrefix, c.id, c.seq)
		buf.Reset()
		closing := ""
		if n := c.l.cfg.PerConnection; n > 0 && c.seq%n == 0 {
			closing = "Connection: close\r\n"
		}
		if c.l.cfg.Get {
			fmt.Fprintf(&buf, "GET %s HTTP/1.1\r\nHost: loadgen\r\n%s\r\n", c.l.cfg.Path, closing)
		} else {
			body := `{"id":"` + id + `","item":"widget","qty":1}`
			fmt.Fprintf(&buf, "POST %s HTTP/1.1\r\nHost: loadgen\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s",
				c.l.cfg.Path, len(body), closing, body)
		}
		start := time.Now()
		status, kind, err := c.do(buf.Bytes())
		lat := time.Since(start)
		c.requests++
		ok := err == nil && status >= 200 && status < 300
		if ok {
			c.ok++
			c.l.ack()
			if status == http.StatusAccepted && !c.l.cfg.Get {
				c.acked = append(c.acked, id)
			}
		} else {
			if err == nil {
				kind = "status_" + strconv.Itoa(status)
				err = fmt.Errorf("HTTP %d", status)
			}
			c.failed[kind]++
			if _, seen := c.examples[kind]; !seen {
				c.examples[kind] = err.Error()
			}
			c.l.failed.Add(1)
		}
		if c.l.cfg.Samples || c.l.cfg.Observe != nil {
			s := Sample{At: start.Sub(c.l.start), Latency: lat, OK: ok, Status: status}
			if c.l.cfg.Samples {
				c.samples = append(c.samples, s)
			}
			if c.l.cfg.Observe != nil {
				c.l.cfg.Observe(s)
			}
		}
		pause := c.l.cfg.Pace
		if kind == "connect" {
			// Nobody is listening: don't spin.
			pause = max(pause, time.Millisecond)
		}
		if pause > 0 {
			// A load generator's pacing, not synchronisation.
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
}

// do sends one request on the keep-alive connection, dialing when there
// is none, and reads the response. It never retries.
func (c *client) do(req []byte) (status int, kind string, err error) {
	if c.conn == nil {
		network, address := "tcp", c.l.cfg.Addr
		if len(address) > 5 && address[:5] == "unix:" {
			network, address = "unix", address[5:]
		}
		conn, err := net.DialTimeout(network, address, c.l.cfg.Timeout)
		if err != nil {
			return 0, "connect", err
		}
		c.dials++
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 4096)
	}
	c.conn.SetDeadline(time.Now().Add(c.l.cfg.Timeout))
	if _, err := c.conn.Write(req); err != nil {
		c.close()
		return 0, classify("write", err), err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return 0, classify("read", err), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.close()
		return 0, classify("read", err), err
	}
	if resp.Close {
		c.close()
	}
	return resp.StatusCode, "", nil
}

func classify(op string, err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return op + "_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return op + "_eof"
	case errors.Is(err, syscall.EPIPE):
		return op + "_broken_pipe"
	}
	return op
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
