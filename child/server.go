package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/go-hclog"
)

// Defaults of Config. Together they stay below baton's default stop
// timeout of 30 s, so that a healthy child is never killed while it drains:
// 1 s + 10 s + 5 s + 10 s = 26 s.
const (
	// DefaultListenerName is the inherited socket Serve takes.
	DefaultListenerName = "http"
	// DefaultAddr is where Serve listens when no socket was inherited.
	DefaultAddr = "127.0.0.1:8080"
	// DefaultCloseTimeout bounds closing this process's copy of the
	// listening socket (see the O_NONBLOCK note in the package doc).
	DefaultCloseTimeout = 1 * time.Second
	// DefaultDrainTimeout bounds the wait for open connections to close
	// after responses started to carry "Connection: close".
	DefaultDrainTimeout = 10 * time.Second
	// DefaultShutdownTimeout bounds http.Server.Shutdown, which then
	// waits for the requests still in flight.
	DefaultShutdownTimeout = 5 * time.Second
	// DefaultTaskTimeout bounds the wait for background tasks after
	// their context was cancelled.
	DefaultTaskTimeout = 10 * time.Second
)

// EnvStopTimeout is set by baton to the program's stop timeout. When it is
// shorter than the sum of the defaults, the defaults of the timeouts left
// zero in Config are scaled down to fit in 90 % of it.
const EnvStopTimeout = protocol.EnvStopTimeout

// Config configures a Server. The zero value serves on the inherited
// socket "http", or on 127.0.0.1:8080 without one, with the default
// timeouts.
type Config struct {
	// Listener is the name of the inherited socket to serve on.
	// Default DefaultListenerName.
	Listener string
	// Addr is the address to listen on when the process inherited no
	// sockets: "host:port", or "unix:/path". Default DefaultAddr.
	Addr string
	// Logger receives the server's events. Default NewLogger("child").
	Logger hclog.Logger
	// HTTP, when set, provides the settings of the http.Server (timeouts,
	// TLS, protocols, error log). Its Handler and ConnState are replaced.
	// With a TLSConfig that holds a certificate, Serve serves TLS, and
	// HTTP/2 unless Protocols or TLSNextProto turn it off; Protocols may
	// also turn on unencrypted HTTP/2 (h2c). The drain sends GOAWAY on
	// every HTTP/2 connection as it begins, unless the application set
	// TLSNextProto itself.
	HTTP *http.Server
	// Signals start the drain. Default SIGTERM and SIGINT. New has them
	// caught in the background; one that comes before Serve does what
	// it does without a Server (SIGTERM ends the process).
	Signals []os.Signal
	// WatchdogCheck, when set, runs before each WATCHDOG=1 of systemd's
	// watchdog (WATCHDOG_USEC, which baton sets for a program with
	// liveness { watchdog }): the ping is skipped when it fails, and the
	// supervisor replaces the process once none came in time. Without it
	// the server pings while its process runs.
	WatchdogCheck func(ctx context.Context) error

	// DisableIdleHandoff keeps idle keep-alive connections in this
	// process until the drain closes them, as before. By default, under
	// baton, the drain passes each idle plaintext HTTP/1.1 connection to
	// the generation that replaces this one, which serves the client's
	// next request on it: the client sees no close and no reconnect,
	// and this process exits as soon as its requests in flight and its
	// background work are done. (A final stop, without a successor,
	// drains as before either way.)
	DisableIdleHandoff bool

	// LameDuck is how long the server keeps accepting and serving after
	// a stop signal, with Health answering 503 and every response
	// carrying "Connection: close", before it drains: the time the load
	// balancers in front of it need to stop sending here. For a server
	// run without baton (Kubernetes, Nomad, systemd); EnvLameDuck
	// overrides it. Default 0: the drain begins at once. Under baton it is
	// always 0: a handover needs none, since the socket stays open, and
	// baton's shutdown_delay does the same for the whole host.
	LameDuck time.Duration

	CloseTimeout    time.Duration // default DefaultCloseTimeout
	DrainTimeout    time.Duration // default DefaultDrainTimeout
	ShutdownTimeout time.Duration // default DefaultShutdownTimeout
	TaskTimeout     time.Duration // default DefaultTaskTimeout
}

// ErrClosed is returned for work submitted after the drain closed the
// door: by Server.Go and Server.Start once background tasks are stopping,
// and by BatchWriter.Enqueue once its task was told to finish.
var ErrClosed = errors.New("child: closed: the server is shutting down")

// Server serves HTTP on an inherited or own socket, tracks background
// tasks, and on a stop signal drains both in the order described in the
// package documentation.
//
// Go, StartTask, Draining and Health are safe for concurrent use; Serve is
// called once.
type Server struct {
	cfg  Config
	log  hclog.Logger
	ln   *boundedListener
	addr string

	draining atomic.Bool
	lame     atomic.Bool   // in the lame duck (lameduck.go)
	stopping chan struct{} // closed when the drain begins
	drainCtx context.Context
	drained  context.CancelCauseFunc // cancels drainCtx: DrainContext's signal
	inflight atomic.Int64
	conns    connCounter
	tasks    taskGroup
	serving  atomic.Bool
	stats    *requestStats     // nil unless the supervisor asked for counters
	hand     *handoffState     // nil: idle connections do not move
	endpoint *handoff.Endpoint // the process's handoff socket, or nil
	port     *handoff.Port     // opened by New; nil: Serve decides
	// idleStopped is closed once the drain stopped the idle connections
	// that move (or knew that none does).
	idleStopped chan struct{}
	ready       chan struct{} // closed once Serve said READY=1
	sigs        *signals      // the drain's, caught by Serve
}

// New takes the listening socket, inherited or its own, and returns a
// Server that is not serving yet. Background tasks may be started before
// Serve is called. Under baton, New also tells baton over the handoff
// socket that this process will take the listener's idle connections,
// so that baton's answer comes while the application starts up, and
// has Config.Signals caught in the background, so that Serve does not
// wait for that before it accepts (a signal before Serve still does what
// it does with nothing caught). A program that makes a Server is
// expected to Serve it.
func New(cfg Config) (*Server, error) {
	takeEnv()
	cfg = withDefaults(cfg, os.Getenv(EnvStopTimeout))
	if cfg.Logger == nil {
		cfg.Logger = NewLogger("child")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, stopping: make(chan struct{}), stats: takeStatsEnv(), endpoint: env.handoff, idleStopped: make(chan struct{}), ready: make(chan struct{})}
	var err error
	if s.cfg.LameDuck, err = lameDuckFrom(cfg.LameDuck, os.Getenv(EnvLameDuck)); err != nil {
		s.log.Warn("ignoring the lame duck's environment variable", "error", err)
	}
	if s.cfg.LameDuck > 0 && Supervised() {
		s.log.Debug("no lame duck under baton: its shutdown_delay covers the host, and a handover needs none", "lame_duck", s.cfg.LameDuck.String())
		s.cfg.LameDuck = 0
	}
	s.drainCtx, s.drained = context.WithCancelCause(context.Background())
	if env.ignored != "" {
		s.log.Warn("ignoring inherited sockets", "reason", env.ignored)
	}
	if env.handoffErr != nil {
		s.log.Warn("ignoring the inherited handoff socket; idle connections will drain", "error", env.handoffErr)
	}
	l, err := Listen(cfg.Listener, cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.ln = &boundedListener{Listener: l, timeout: cfg.CloseTimeout, done: make(chan struct{}), accepting: make(chan struct{})}
	s.addr = l.Addr().String()
	if l.Addr().Network() == "unix" {
		s.addr = "unix:" + s.addr
	}
	s.conns.init()
	s.tasks.init()
	s.port = s.openPort(cfg.HTTP)
	s.sigs = prepareSignals(s.cfg.Signals)
	return s, nil
}

func withDefaults(cfg Config, stopTimeout string) Config {
	if cfg.Listener == "" {
		cfg.Listener = DefaultListenerName
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if len(cfg.Signals) == 0 {
		cfg.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	scale := 1.0
	if d, err := time.ParseDuration(stopTimeout); err == nil && d > 0 {
		sum := DefaultCloseTimeout + DefaultDrainTimeout + DefaultShutdownTimeout + DefaultTaskTimeout
		if budget := d * 9 / 10; budget < sum {
			scale = float64(budget) / float64(sum)
		}
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = time.Duration(float64(d) * scale)
		}
	}
	def(&cfg.CloseTimeout, DefaultCloseTimeout)
	def(&cfg.DrainTimeout, DefaultDrainTimeout)
	def(&cfg.ShutdownTimeout, DefaultShutdownTimeout)
	def(&cfg.TaskTimeout, DefaultTaskTimeout)
	return cfg
}

// Addr is the address the server listens on, "unix:/path" for a unix
// socket.
func (s *Server) Addr() string { return s.addr }

// Draining reports whether the drain has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stopping returns a channel that is closed when the drain begins, for
// work that should stop taking input then (queue consumers, tickers)
// rather than when its task's context is cancelled after HTTP drained.
// Handlers use DrainContext, which fires at the same moment.
func (s *Server) Stopping() <-chan struct{} { return s.stopping }

// Serve serves h until one of the configured signals arrives, ctx is
// cancelled, or a background task fails; then it drains and returns.
//
// It returns nil when every request in flight and every background task
// finished within their bounds, a *DrainError when a bound cut work off,
// and another error when serving or a task failed. Pass the result to
// ExitCode to get the process's exit status.
func (s *Server) Serve(ctx context.Context, h http.Handler) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("child: Serve called twice")
	}
	sigs, stop := s.sigs.catch()
	defer stop()

	srv := s.cfg.HTTP
	if srv == nil {
		srv = &http.Server{ReadHeaderTimeout: 30 * time.Second}
	}
	srv.Handler = s.wrap(h)
	srv.ConnState = s.conns.track
	if s.hand = s.openHandoff(srv); s.hand != nil {
		srv.ConnState = func(c net.Conn, st http.ConnState) {
			s.hand.state(c, st)
			s.conns.track(c, st)
		}
	}
	base, connCtx := srv.BaseContext, srv.ConnContext
	srv.BaseContext = func(l net.Listener) context.Context {
		ctx := context.Background()
		if base != nil {
			ctx = base(l)
		}
		return context.WithValue(ctx, serverKey{}, s)
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connCtx != nil {
			ctx = connCtx(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}
	goaway := configureHTTP2(srv)

	serveErr := make(chan error, 1)
	var ln net.Listener = s.ln
	var arrived chan struct{} // closed when the arrivals' Serve returned
	if s.hand != nil {
		ln = movingListener{Listener: s.ln, h: s.hand}
		arrived = make(chan struct{})
		// Connections passed from the previous generation, served as
		// if accepted here, until Shutdown closes their port.
		go func() {
			defer close(arrived)
			srv.Serve(arrivals{s.hand})
		}()
	}
	ln = tlsListener(ln, srv)
	go func() { serveErr <- srv.Serve(ln) }()
	// READY only once the server accepts: the connections that come once
	// baton stopped the previous generation are taken at once, and
	// nothing below runs ahead of the first accept(2).
	select {
	case <-s.ln.accepting:
	case err := <-serveErr:
		serveErr <- err // failed before accepting: reported below
	}
	if s.hand != nil {
		// Serving already, but READY only once baton knows this process
		// takes connections: the previous generation's idle ones come
		// here as soon as baton has the READY.
		if err := s.hand.port.WaitAck(s.cfg.CloseTimeout); err != nil {
			s.log.Warn("idle connections may not move to this generation; they will drain", "error", err)
		}
	}
	// READY first: baton stops the previous generation on it, and the
	// log line would wake baton's reader of this output ahead of it.
	s.notify("READY=1\nSTATUS=serving on " + s.addr)
	close(s.ready)
	if Supervised() {
		s.log.Info("serving", "addr", s.addr) // baton adds the generation and pid
	} else {
		s.log.Info("serving", "addr", s.addr, "pid", os.Getpid())
	}
	if s.stats != nil {
		stop := make(chan struct{})
		defer close(stop)
		go s.stats.report(stop)
	}
	if s.hand != nil {
		stop := make(chan struct{})
		defer close(stop)
		go s.watchShares(stop)
	}
	if env.watchdog > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go s.pingWatchdog(env.watchdog/2, stop)
	}

	var cause error
	var why []any // logged once the listener is closed: the line wakes baton
	select {
	case sig := <-sigs:
		cause = s.lameDuck(ctx, sig, sigs, serveErr)
		why = []any{"signal", sig.String()}
	case <-ctx.Done():
		why = []any{"reason", context.Cause(ctx)}
	case err := <-serveErr:
		cause = fmt.Errorf("child: serve: %w", err)
		s.log.Error("serving failed, draining", "error", err)
	case err := <-s.tasks.failed:
		cause = err
		s.log.Error("background task failed, draining", "error", err)
	}
	err := s.drain(srv, goaway, why)
	if arrived != nil {
		s.hand.port.Close()
		<-arrived
	}
	return errors.Join(cause, err)
}

// drain performs the measured sequence of DESIGN.md: stop accepting, ask
// clients to close, wait for connections to go, shut down what remains,
// and only then finish the background tasks. why, when set, is logged as
// the reason for draining.
func (s *Server) drain(srv *http.Server, goaway func(), why []any) error {
	start := time.Now()

	// 1. Close this process's copy of the listening socket, first: until
	// then this process takes a share of new connections from the next
	// generation, which serves already. The supervisor and the next
	// generation keep theirs, so connections waiting in the accept queue
	// are served by the next generation. Only then STOPPING=1 and the log
	// line, each of which wakes baton.
	if err := s.ln.Close(); errors.Is(err, errCloseTimeout) {
		s.log.Warn("closing the listener timed out; draining anyway", "timeout", s.cfg.CloseTimeout.String())
	}
	s.notify("STOPPING=1\nSTATUS=draining")
	if why != nil {
		s.log.Info("draining", why...)
	}
	// Under baton, when a generation that replaces this one serves,
	// idle keep-alive connections move to it instead of draining: those
	// idle now at once, those busy when their response ended.
	moving := s.hand != nil && s.hand.port.Drain(s.cfg.CloseTimeout)
	if moving {
		s.hand.moving.Store(true)
	}
	// 2. Every response from now on carries "Connection: close" (but on
	// a connection that moves once idle); long-lived handlers are told
	// to say goodbye (DrainContext), and HTTP/2 clients get GOAWAY:
	// each moves to the next generation.
	s.draining.Store(true)
	close(s.stopping)
	s.drained(ErrDraining)
	if goaway != nil {
		goaway()
	}
	if moving {
		s.hand.moveIdle()
	}
	close(s.idleStopped)

	// 3. Wait for the connections to go, hijacked ones included, then
	// close the hijacked ones left and shut down the rest.
	open := s.conns.waitZero(s.cfg.DrainTimeout, func(n int) {
		s.notify(fmt.Sprintf("STATUS=draining: %d connections open", n))
	})
	var derr DrainError
	if open > 0 {
		s.log.Info("drain timeout: shutting down the remaining connections", "open", open, "timeout", s.cfg.DrainTimeout.String())
		if derr.Hijacked = s.conns.cutHijacked(); derr.Hijacked > 0 {
			s.log.Error("hijacked connections cut off at the drain timeout: their handlers ignored the drain",
				"connections", derr.Hijacked, "timeout", s.cfg.DrainTimeout.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	err := srv.Shutdown(ctx)
	cancel()
	// Shutdown also returns the listener's close error (a close that
	// timed out in step 1, already logged): only its deadline cuts off
	// requests.
	if errors.Is(err, context.DeadlineExceeded) {
		derr.Requests = int(s.inflight.Load())
		srv.Close()
		s.log.Error("requests cut off by the shutdown timeout", "requests", derr.Requests, "timeout", s.cfg.ShutdownTimeout.String())
	}
	httpDone := time.Since(start)
	if h := s.hand; h != nil {
		to := "none: no generation takes them"
		if moving {
			to = "the next generation"
		}
		s.log.Info("idle connections handed over", "moved", h.moved.Load(), "drained", h.drained.Load(), "returned", h.returned.Load(), "to", to)
	}

	// 4. No handler runs any more: close the door to new background work,
	// cancel the tasks' context and wait for them, bounded.
	n := s.tasks.running()
	if n > 0 {
		s.notify(fmt.Sprintf("STATUS=waiting for %d background tasks", n))
	}
	derr.Tasks, derr.Pending = s.tasks.stop(s.cfg.TaskTimeout)
	if len(derr.Tasks) > 0 {
		s.log.Error("background work abandoned at the task deadline",
			"tasks", strings.Join(derr.Tasks, ","), "pending", derr.Pending, "timeout", s.cfg.TaskTimeout.String())
	}

	s.log.Info("drained", "http", httpDone.Round(time.Millisecond).String(), "total", time.Since(start).Round(time.Millisecond).String())
	derr.Hijacked += s.conns.lateCuts()
	if derr.Requests > 0 || derr.Hijacked > 0 || len(derr.Tasks) > 0 {
		s.notify("STATUS=drained, work abandoned: " + derr.Error())
		return &derr
	}
	s.notify("STATUS=drained")
	return nil
}

func (s *Server) notify(state string) {
	if err := Notify(state); err != nil {
		s.log.Debug("notify failed", "error", err)
	}
}

func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		if r.ProtoMajor == 2 {
			// Before the handler can ask for DrainContext.
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				s.conns.servesHTTP2(c)
			}
		}
		var start time.Time
		if s.stats != nil {
			start = time.Now()
		}
		dw := &drainWriter{ResponseWriter: w, s: s, r: r}
		h.ServeHTTP(dw, r)
		if !dw.wrote && s.closing(r) {
			// net/http writes the header of a handler that wrote nothing
			// after it returns: still in time.
			w.Header().Set("Connection", "close")
		}
		if s.stats != nil {
			code := dw.code
			if !dw.wrote {
				code = http.StatusOK
			}
			s.stats.record(code, time.Since(start))
		}
	})
}

// drainWriter adds "Connection: close" to a response whose header is
// written after the drain began, including the responses of requests that
// were already in flight then: their clients close instead of sending one
// more request to this process.
type drainWriter struct {
	http.ResponseWriter
	s     *Server
	r     *http.Request
	wrote bool
	code  int // the status written
}

func (w *drainWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote, w.code = true, code
		// A protocol switch (a WebSocket) needs its "Connection:
		// Upgrade"; its handler says goodbye in its own protocol.
		if w.s.closing(w.r) && code != http.StatusSwitchingProtocols {
			w.ResponseWriter.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile for static files.
func (w *drainWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *drainWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection to the handler (a WebSocket) and keeps it
// in the drain's connection count until the handler closes it.
func (w *drainWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	return &hijackedConn{Conn: c, conns: &w.s.conns, raw: c}, brw, nil
}

// CloseNotify passes through: gin's Context.Stream still uses it.
func (w *drainWriter) CloseNotify() <-chan bool {
	//lint:ignore SA1019 gin requires it
	return w.ResponseWriter.(http.CloseNotifier).CloseNotify()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// connCounter counts the server's open connections through ConnState,
// hijacked ones included until their handler closes them.
type connCounter struct {
	mu       sync.Mutex
	n        int
	changed  chan struct{}         // closed and replaced on every change
	hijacked map[net.Conn]struct{} // open, taken over by a handler
	closing  map[net.Conn]struct{} // to close when their response ends
	http2    map[net.Conn]struct{} // open, serving HTTP/2: never in closing
	cut      bool                  // the hijacked ones were cut off
	late     int                   // hijacked after that, and closed at once
}

func (c *connCounter) init() {
	c.changed = make(chan struct{})
	c.hijacked = make(map[net.Conn]struct{})
	c.closing = make(map[net.Conn]struct{})
	c.http2 = make(map[net.Conn]struct{})
}

func (c *connCounter) track(conn net.Conn, state http.ConnState) {
	if c.count(conn, state) {
		// Outside the lock: closing a TLS connection writes an alert.
		conn.Close()
	}
}

// count counts a change of state and reports whether conn is to be
// closed.
func (c *connCounter) count(conn net.Conn, state http.ConnState) (closeIt bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch state {
	case http.StateNew:
		c.n++
	case http.StateIdle:
		if _, ok := c.closing[conn]; ok {
			delete(c.closing, conn)
			return true // StateClosed follows
		}
		return false
	case http.StateClosed:
		delete(c.closing, conn)
		delete(c.http2, conn)
		c.n--
	case http.StateHijacked:
		delete(c.closing, conn)
		if !c.cut {
			c.hijacked[conn] = struct{}{} // still open: it stays counted
			return false
		}
		// Past the drain bound: nobody waits for it any more.
		c.n--
		c.late++
		closeIt = true
	default:
		return false
	}
	c.changedLocked()
	return closeIt
}

func (c *connCounter) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// closeWhenIdle marks conn, which carries a long-lived response that was
// told of the drain, to be closed when that response ends: an HTTP/1.1
// connection. An HTTP/2 one is left to its GOAWAY: its server calls
// ConnState when a stream's last frame is buffered, not yet sent, so a
// close there would cut off the stream's end, the goodbye with it.
func (c *connCounter) closeWhenIdle(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, hijacked := c.hijacked[conn]
	_, multiplexed := c.http2[conn]
	if !hijacked && !multiplexed {
		c.closing[conn] = struct{}{}
	}
}

// servesHTTP2 notes that conn carries HTTP/2 streams, until it closes.
func (c *connCounter) servesHTTP2(conn net.Conn) {
	c.mu.Lock()
	c.http2[conn] = struct{}{}
	c.mu.Unlock()
}

// release uncounts a hijacked connection its handler closed.
func (c *connCounter) release(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.hijacked[conn]; ok {
		delete(c.hijacked, conn)
		c.n--
		c.changedLocked()
	}
}

// cutHijacked closes the hijacked connections still open and returns how
// many there were; any hijacked later is closed at once.
func (c *connCounter) cutHijacked() int {
	c.mu.Lock()
	c.cut = true
	open := make([]net.Conn, 0, len(c.hijacked))
	for conn := range c.hijacked {
		open = append(open, conn)
	}
	clear(c.hijacked)
	c.n -= len(open)
	c.changedLocked()
	c.mu.Unlock()
	for _, conn := range open {
		conn.Close()
	}
	return len(open)
}

// lateCuts returns how many connections were hijacked, and closed, after
// cutHijacked.
func (c *connCounter) lateCuts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.late
}

// waitZero waits up to timeout for the count to reach zero and returns
// the count it saw last. progress is called about once a second.
func (c *connCounter) waitZero(timeout time.Duration, progress func(n int)) int {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		c.mu.Lock()
		n, changed := c.n, c.changed
		c.mu.Unlock()
		if n <= 0 {
			return 0
		}
		select {
		case <-changed:
		case <-tick.C:
			progress(n)
		case <-deadline.C:
			return n
		}
	}
}

var errCloseTimeout = errors.New("child: closing the listener timed out")

// boundedListener makes Close idempotent and bounded. Close of a socket
// whose shared file description was switched to blocking mode by another
// process hangs while a goroutine sits in accept(2); the drain must go on.
type boundedListener struct {
	net.Listener
	timeout time.Duration
	once    sync.Once
	done    chan struct{}
	err     error

	accepting chan struct{} // closed by the first Accept
	first     sync.Once
}

func (l *boundedListener) Accept() (net.Conn, error) {
	l.first.Do(func() { close(l.accepting) })
	return l.Listener.Accept()
}

func (l *boundedListener) Close() error {
	first := false
	l.once.Do(func() {
		first = true
		go func() {
			l.err = l.Listener.Close()
			close(l.done)
		}()
	})
	if !first {
		// http.Server.Shutdown closes it again: only the first caller waits.
		select {
		case <-l.done:
			return l.err
		default:
			return errCloseTimeout
		}
	}
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	select {
	case <-l.done:
		return l.err
	case <-t.C:
		return errCloseTimeout
	}
}
