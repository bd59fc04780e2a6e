package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	proctest.RunChild(fakeChildren)
	goleak.VerifyTestMain(m)
}

func quietLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: io.Discard})
}

func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve runs s.Serve in the background and returns its result channel.
func serve(s *Server, ctx context.Context, h http.Handler) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, h) }()
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// rawConn is a keep-alive HTTP/1.1 connection driven by hand.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c, bufio.NewReader(c)}
}

func (c *rawConn) get(t *testing.T, path string) *http.Response {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// The drain order of DESIGN.md, observed from outside: once draining, a
// request on an idle keep-alive connection is still served, with
// "Connection: close"; health says 503; the request in flight completes;
// Serve returns nil because nothing was cut off.
func TestServe_drainClosesKeepAliveAfterNextRequest(t *testing.T) {
	s := newTestServer(t, Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, mux)

	idle := dial(t, s.Addr())
	if resp := idle.get(t, "/fast"); resp.Close {
		t.Fatal("keep-alive connection closed before the drain")
	}
	busy := dial(t, s.Addr())
	fmt.Fprintf(busy, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	cancel()
	<-s.Stopping()
	resp := idle.get(t, "/fast")
	if !resp.Close {
		t.Fatal("response during the drain: want Connection: close")
	}
	rec := httptest.NewRecorder()
	s.Health().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"draining"`) {
		t.Fatalf("health while draining: want 503 draining, have %d %s", rec.Code, rec.Body)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Fatal("the listener still accepts connections during the drain")
	}

	close(release)
	br, err := http.ReadResponse(busy.br, nil)
	if err != nil {
		t.Fatalf("request in flight: %v", err)
	}
	if body, _ := io.ReadAll(br.Body); string(body) != "done" || br.StatusCode != 200 || !br.Close {
		t.Fatalf("request in flight: want 200 \"done\" with Connection: close, have %d %q close=%v", br.StatusCode, body, br.Close)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
}

// A request still running at the shutdown timeout is cut off: Serve
// reports it and ExitCode says ExitAbandoned.
func TestServe_shutdownTimeoutCutsRequest(t *testing.T) {
	s := newTestServer(t, Config{DrainTimeout: time.Millisecond, ShutdownTimeout: time.Millisecond})
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, h)
	c := dial(t, s.Addr())
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	cancel()
	err := result(t, done)
	var derr *DrainError
	if !errors.As(err, &derr) || derr.Requests != 1 {
		t.Fatalf("want a DrainError with 1 request, have %v", err)
	}
	if code := ExitCode(err); code != ExitAbandoned {
		t.Fatalf("exit code: want %d, have %d", ExitAbandoned, code)
	}
}

// Background tasks are stopped only after HTTP drained, and work offered
// after that gets ErrClosed.
func TestTasks_stopAfterHTTPAndCloseTheDoor(t *testing.T) {
	s := newTestServer(t, Config{})
	var order []string
	var mu sync.Mutex
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	if err := s.Go("worker", func(ctx context.Context) error {
		<-ctx.Done()
		note("task stopped")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		note("request done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, h)
	c := dial(t, s.Addr())
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	cancel()
	<-s.Stopping()
	close(release)
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
	if want := "request done,task stopped"; strings.Join(order, ",") != want {
		t.Fatalf("order: want %s, have %s", want, strings.Join(order, ","))
	}
	if err := s.Go("late", func(context.Context) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Go after the drain: want ErrClosed, have %v", err)
	}
}

// A task that fails while serving stops the server: the acknowledged
// work may depend on it.
func TestTasks_failureDrainsServer(t *testing.T) {
	s := newTestServer(t, Config{})
	boom := errors.New("database gone")
	fail := make(chan struct{})
	s.Go("writer", func(ctx context.Context) error {
		<-fail
		return boom
	})
	done := serve(s, context.Background(), http.NotFoundHandler())
	close(fail)
	err := result(t, done)
	if !errors.Is(err, boom) || ExitCode(err) != ExitFailure {
		t.Fatalf("want the task's error and ExitFailure, have %v (%d)", err, ExitCode(err))
	}
}

// A task still running at the task deadline is reported with the work it
// holds.
func TestTasks_deadlineReportsPending(t *testing.T) {
	s := newTestServer(t, Config{TaskTimeout: 10 * time.Millisecond})
	stuck := make(chan struct{})
	defer close(stuck)
	s.StartTask(Task{Name: "stuck", Pending: func() int { return 42 }, Run: func(ctx context.Context) error {
		<-stuck
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := result(t, serve(s, ctx, http.NotFoundHandler()))
	var derr *DrainError
	if !errors.As(err, &derr) || derr.Pending != 42 || len(derr.Tasks) != 1 || derr.Tasks[0] != "stuck" {
		t.Fatalf("want stuck holding 42, have %v", err)
	}
	if !strings.Contains(err.Error(), "42 pending") {
		t.Fatalf("message does not say how much: %q", err)
	}
}

func TestBatchWriter_flushesEverythingEnqueuedBeforeClose(t *testing.T) {
	var mu sync.Mutex
	var written []int
	var batches int
	w := NewBatchWriter(BatchConfig[int]{Size: 10, Interval: time.Hour, Flush: func(ctx context.Context, b []int) error {
		mu.Lock()
		defer mu.Unlock()
		batches++
		written = append(written, b...)
		return nil
	}})
	for i := 0; i < 95; i++ {
		if err := w.Enqueue(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(written) != 95 || w.Pending() != 0 {
		t.Fatalf("want 95 written and none pending, have %d written, %d pending", len(written), w.Pending())
	}
	for i, v := range written {
		if v != i {
			t.Fatalf("order: item %d is %d", i, v)
		}
	}
	if batches != 10 {
		t.Fatalf("want 10 batches of at most 10, have %d", batches)
	}
	if err := w.Enqueue(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after close: want ErrClosed, have %v", err)
	}
}

func TestBatchWriter_retriesFailedBatch(t *testing.T) {
	fails := 2
	var got []string
	var errs int
	w := NewBatchWriter(BatchConfig[string]{
		Flush: func(ctx context.Context, b []string) error {
			if fails > 0 {
				fails--
				return errors.New("busy")
			}
			got = append(got, b...)
			return nil
		},
		OnError: func(error, int) { errs++ },
	})
	w.Enqueue(context.Background(), "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || errs != 2 {
		t.Fatalf("want 1 item written after 2 errors, have %d after %d", len(got), errs)
	}
}

func TestBatchWriter_fullQueueWaitsForRoom(t *testing.T) {
	w := NewBatchWriter(BatchConfig[int]{Queue: 1, Flush: func(context.Context, []int) error { return nil }})
	w.Enqueue(context.Background(), 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Enqueue(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue on a full queue: want the context's error, have %v", err)
	}
}

func TestWithDefaults_fitInStopTimeout(t *testing.T) {
	sum := func(c Config) time.Duration {
		return c.CloseTimeout + c.DrainTimeout + c.ShutdownTimeout + c.TaskTimeout
	}
	for _, tc := range []struct {
		stop string
		want time.Duration
	}{
		{"", 26 * time.Second},
		{"30s", 26 * time.Second},
		{"10s", 9 * time.Second},
		{"bogus", 26 * time.Second},
	} {
		c := withDefaults(Config{}, tc.stop)
		if got := sum(c); got < tc.want-time.Millisecond || got > tc.want {
			t.Errorf("BATON_STOP_TIMEOUT=%q: want the bounds to add up to %v, have %v", tc.stop, tc.want, got)
		}
	}
	if c := withDefaults(Config{TaskTimeout: time.Minute}, "10s"); c.TaskTimeout != time.Minute {
		t.Errorf("an explicit TaskTimeout was changed to %v", c.TaskTimeout)
	}
}

// hangingListener's Close blocks until release is closed, as closing a
// socket another thread is blocked in accept(2) on does.
type hangingListener struct {
	net.Listener
	release chan struct{}
}

func (l *hangingListener) Close() error {
	<-l.release
	return l.Listener.Close()
}

// A listener close that times out (and completes later) is logged as what
// it is; it is not reported as requests cut off, and the exit status
// stays 0.
func TestServe_listenerCloseTimeoutIsNotCutRequests(t *testing.T) {
	log := proctest.NewBuffer()
	s := newTestServer(t, Config{CloseTimeout: 10 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Output: log})})
	release := make(chan struct{})
	s.ln.Listener = &hangingListener{Listener: s.ln.Listener, release: release}
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, http.NotFoundHandler())
	c := dial(t, s.Addr())
	if resp := c.get(t, "/"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.Close()
	cancel()
	if _, ok := log.Wait("closing the listener timed out", 1, 30*time.Second); !ok {
		t.Fatalf("log:\n%s", log)
	}
	close(release) // http.Server.Shutdown waits for its Serve to return
	err := result(t, done)
	if err != nil || ExitCode(err) != 0 {
		t.Fatalf("want a clean drain, have %v", err)
	}
	if !strings.Contains(log.String(), "closing the listener timed out") || strings.Contains(log.String(), "requests cut off") {
		t.Fatalf("log:\n%s", log)
	}
}

// READY=1 comes only once the server accepts: baton stops the previous
// generation on it, and the connections that then come here must find
// the accept loop running. The test holds Serve before its loop (in
// BaseContext, which Serve calls first) and watches for READY for 100 ms;
// without the wait, READY comes at once.
func TestServe_readyOnlyOnceAccepting(t *testing.T) {
	entered, gate := make(chan struct{}), make(chan struct{})
	s := newTestServer(t, Config{HTTP: &http.Server{BaseContext: func(net.Listener) context.Context {
		close(entered)
		<-gate
		return context.Background()
	}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, http.NotFoundHandler())
	<-entered
	select {
	case <-s.ready:
		t.Fatal("READY=1 before the server accepted")
	case <-time.After(100 * time.Millisecond): // a window to watch, not a synchronisation
	}
	close(gate)
	ready(t, s, done)
	cancel()
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// With BATON_STATS_INTERVAL set (baton does, for a program that bakes),
// the server counts its requests, 5xx and latencies, and reports them on
// its notify socket; without it, it neither counts nor reports. It runs
// as a process of its own: the package reads its environment once.
func TestStats_reportedWhenAsked(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := proctest.Start(t, proctest.Self("stats-server", "NOTIFY_SOCKET="+sock, protocol.EnvStatsInterval+"=20ms"))
	line := p.WaitOutput("serving on ", 30*time.Second)
	addr := strings.TrimSpace(line[strings.Index(line, "serving on ")+len("serving on "):])
	c := dial(t, addr)
	for _, path := range []string{"/", "/", "/fail"} {
		c.get(t, path)
	}
	c.Close()
	buf := make([]byte, 4096)
	var st *protocol.Stats
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for st == nil || st.Total < 3 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no counters of 3 requests: %v; output:\n%s", err, p.Output())
		}
		if m, err := protocol.ParseMessage(buf[:n]); err == nil && m.Stats != nil {
			st = m.Stats
		}
	}
	if st.Total != 3 || st.Errors != 1 {
		t.Fatalf("want 3 requests, 1 of them 5xx, have %+v", st)
	}
	if !strings.Contains(p.Output(), "variable gone") {
		t.Fatalf("BATON_STATS_INTERVAL reaches what the program starts:\n%s", p.Output())
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(30 * time.Second)

	s := newTestServer(t, Config{})
	defer unserved(s)
	if s.stats != nil {
		t.Fatal("counting without BATON_STATS_INTERVAL")
	}
}

func init() {
	// stats-server: a server on its own address that prints it, and
	// answers /fail with 500.
	fakeChildren["stats-server"] = func() int {
		s, err := New(Config{Addr: "127.0.0.1:0"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if os.Getenv(protocol.EnvStatsInterval) == "" {
			fmt.Println("variable gone")
		}
		fmt.Println("serving on " + s.Addr())
		return ExitCode(s.Serve(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fail" {
				http.Error(w, "no", http.StatusInternalServerError)
			}
		})))
	}
}
