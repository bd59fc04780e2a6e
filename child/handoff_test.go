package child

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/testtls"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The handoff tests run two generations in this process: an old server
// and a new one, each with its own handoff socket to a real Router, as
// baton runs them.

type generation struct {
	s    *Server
	peer *handoff.Peer
	stop context.CancelFunc
	done <-chan error
	once sync.Once
	err  error
}

// wait returns Serve's result, once it returned.
func (g *generation) wait(t *testing.T) error {
	t.Helper()
	g.once.Do(func() { g.err = result(t, g.done) })
	return g.err
}

// newGeneration starts a server called name (its handler says so) with a
// handoff socket to r, and checks that it answers. Its drain timeout is
// a minute, so that a drain that waits for an idle connection instead of
// moving it fails the test.
func newGeneration(t *testing.T, r *handoff.Router, n int, name string, cfg Config) *generation {
	t.Helper()
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = time.Minute
	}
	g := startGeneration(t, r, n, name, cfg)
	c := dial(t, g.s.Addr())
	if resp := c.get(t, "/"); resp.StatusCode != 200 {
		t.Fatalf("%s: %s", name, resp.Status)
	}
	c.Close()
	return g
}

// startGeneration starts a server called name with a handoff socket to r
// and waits until it said READY=1.
func startGeneration(t *testing.T, r *handoff.Router, n int, name string, cfg Config) *generation {
	t.Helper()
	s := newTestServer(t, cfg)
	peer, f, err := r.Attach(n)
	if err != nil {
		t.Fatal(err)
	}
	e, err := handoff.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		peer.Release()
		<-peer.Done()
	})
	s.endpoint = e
	ctx, cancel := context.WithCancel(context.Background())
	g := &generation{s: s, peer: peer, stop: cancel}
	g.done = serve(s, ctx, echoHandler(name))
	t.Cleanup(func() {
		cancel()
		g.wait(t)
	})
	g.waitReady(t)
	return g
}

// echoHandler answers every request with its server's name and the body
// it received.
func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s:%s", name, b)
	})
}

func post(body string) string {
	return fmt.Sprintf("POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// response reads one response and returns its body and whether the
// server said it closes the connection.
func (c *rawConn) response(t *testing.T) (string, bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %d %q %v", resp.StatusCode, b, err)
	}
	return string(b), resp.Close
}

// An idle keep-alive connection moves: the old server's drain ends at
// once (not after its minute of drain timeout), and the client's next
// request, on the same connection, is answered by the new server.
func TestHandoff_idleConnectionMoves(t *testing.T) {
	r := handoff.NewRouter(hclog.NewNullLogger())
	old := newGeneration(t, r, 1, "old", Config{})
	cur := newGeneration(t, r, 2, "new", Config{})
	r.SetCurrent(cur.peer)

	c := dial(t, old.s.Addr())
	io.WriteString(c, post("one"))
	if body, _ := c.response(t); body != "old:one" {
		t.Fatalf("before the drain: %q", body)
	}
	old.stop()
	if err := old.wait(t); err != nil {
		t.Fatalf("old drain: %v", err)
	}
	io.WriteString(c, post("two"))
	if body, closing := c.response(t); body != "new:two" || closing {
		t.Fatalf("after the drain: want new:two on a kept connection, have %q (close %v)", body, closing)
	}
	// And again, from the new server's idle state.
	io.WriteString(c, post("three"))
	if body, _ := c.response(t); body != "new:three" {
		t.Fatalf("third request: %q", body)
	}
}

// Requests sent byte by byte across the moment of the handover: each
// client has sent a different number of bytes of its next request when
// the old server's drain begins, and sends the rest one byte at a time.
// Every request is answered whole, once, by one server; a client that
// had sent nothing is always answered by the new one; none is asked to
// close, and every connection is the new server's afterwards. Run it
// with -count=100 under -race.
func TestHandoff_byteByByteAcrossTheHandover(t *testing.T) {
	r := handoff.NewRouter(hclog.NewNullLogger())
	old := newGeneration(t, r, 1, "old", Config{})
	cur := newGeneration(t, r, 2, "new", Config{})
	r.SetCurrent(cur.peer)

	req := post("byte-by-byte-" + strings.Repeat("x", 20))
	var offsets []int
	for _, off := range []int{0, 1, 2, 3, 4, 5, 8, 17, 40, len(req) - 30, len(req) - 1} {
		offsets = append(offsets, off, off)
	}
	conns := make([]*rawConn, len(offsets))
	for i, off := range offsets {
		conns[i] = dial(t, old.s.Addr())
		io.WriteString(conns[i], post(fmt.Sprint(i)))
		if body, _ := conns[i].response(t); body != "old:"+fmt.Sprint(i) {
			t.Fatalf("client %d: warm-up answered %q", i, body)
		}
		io.WriteString(conns[i], req[:off])
	}

	// The drain begins while the clients are in the middle. Clients of
	// even index go on once the old server stopped its idle
	// connections; the others race the whole drain.
	old.stop()
	var wg sync.WaitGroup
	type outcome struct {
		body    string
		closing bool
		err     error
	}
	outcomes := make([]outcome, len(offsets))
	for i, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[i]
			if i%2 == 0 {
				<-old.s.idleStopped
			}
			for j := off; j < len(req); j++ {
				if _, err := c.Write([]byte{req[j]}); err != nil {
					outcomes[i].err = err
					return
				}
				time.Sleep(50 * time.Microsecond) // a slow client: the behaviour under test
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				outcomes[i].err = err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			outcomes[i] = outcome{string(b), resp.Close, err}
		}()
	}
	wg.Wait()
	if err := old.wait(t); err != nil {
		t.Fatalf("old drain: %v", err)
	}
	want := req[strings.Index(req, "\r\n\r\n")+4:]
	for i, o := range outcomes {
		if o.err != nil {
			t.Errorf("client %d (%d bytes before the drain): %v", i, offsets[i], o.err)
			continue
		}
		server, body, _ := strings.Cut(o.body, ":")
		if body != want || (server != "old" && server != "new") {
			t.Errorf("client %d (%d bytes before the drain): want %q from old or new, have %q", i, offsets[i], want, o.body)
		}
		if offsets[i] == 0 && i%2 == 0 && server != "new" {
			t.Errorf("client %d had sent nothing when the idle connections were stopped: want it moved, answered by new, have %q", i, o.body)
		}
		if o.closing {
			t.Errorf("client %d: asked to close: its connection should have moved once idle", i)
			continue
		}
		// The connection moved once idle, if it had not: the next
		// request is the new server's.
		io.WriteString(conns[i], post("again"))
		if body, _ := conns[i].response(t); body != "new:again" {
			t.Errorf("client %d: next request answered %q", i, body)
		}
	}
}

// stop waits for the read it stopped, and for no read after it. When
// that read took the client's first bytes after all (they came before
// the stop's deadline), the stop is given up and the connection stays;
// the server's next read, which waits for the rest of the request under
// its own header deadline, must not hold up the drain, which stops the
// other idle connections one after the other. (Found as a 30 s stall of
// TestHandoff_byteByByteAcrossTheHandover, whose clients wait for the
// drain's stop of the idle connections before they send the rest.)
func TestHandoff_stopWaitsOnlyForTheReadItStopped(t *testing.T) {
	sc := &scriptedConn{began: make(chan int, 2), past: make(chan struct{}, 1),
		release: []chan int{make(chan int, 1), make(chan int, 1)}}
	c := &movableConn{Conn: sc, idle: true}
	defer func() { sc.release[1] <- 0 }() // the second read returns at last

	go func() {
		buf := make([]byte, 4096)
		n, _ := c.Read(buf) // the first of an idle period: stopped
		c.Read(buf[n:])     // the rest of the request: not stopped
	}()
	<-sc.began // the first read waits in the kernel
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.stop()
	}()
	<-sc.past                    // the stop set its deadline and waits
	sc.release[0] <- 4           // the first read took 4 bytes all the same
	if r := <-sc.began; r != 1 { // and the server reads on
		t.Fatalf("read %d began, want the second", r)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second): // a failure's bound, not a timing
		t.Fatal("stop still waits, for a read that began after the one it stopped")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping || c.move {
		t.Fatalf("a connection whose first bytes were read stays: stopping %v, move %v", c.stopping, c.move)
	}
}

// scriptedConn is a connection whose reads return when the test says,
// whatever their deadline: read i reports that it began on began, and
// returns the count it receives on release[i]. past says when a read
// deadline in the past was set.
type scriptedConn struct {
	net.Conn
	began   chan int
	past    chan struct{}
	release []chan int
	reads   int
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	i := c.reads
	c.reads++
	c.began <- i
	n := <-c.release[i]
	return n, nil
}

func (c *scriptedConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.past <- struct{}{}
	}
	return nil
}

// Bytes of a next request that the old server read with the previous one
// (pipelining) are in its buffer: such a connection does not move then;
// the old server answers that request whole, and the connection moves
// once idle.
func TestHandoff_pipelinedBytesNeverMove(t *testing.T) {
	for _, k := range []int{1, 3, 4, 12} {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			r := handoff.NewRouter(hclog.NewNullLogger())
			old := newGeneration(t, r, 1, "old", Config{})
			cur := newGeneration(t, r, 2, "new", Config{})
			r.SetCurrent(cur.peer)
			c := dial(t, old.s.Addr())
			next := post("pipelined")
			io.WriteString(c, post("first")+next[:k])
			if body, _ := c.response(t); body != "old:first" {
				t.Fatalf("first: %q", body)
			}
			old.stop()
			<-old.s.idleStopped // the idle connections were stopped: this one stays
			io.WriteString(c, next[k:])
			if body, closing := c.response(t); body != "old:pipelined" || closing {
				t.Fatalf("want old:pipelined on a kept connection, have %q (close %v)", body, closing)
			}
			if err := old.wait(t); err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, post("next"))
			if body, _ := c.response(t); body != "new:next" {
				t.Fatalf("after the drain: want new:next, have %q", body)
			}
		})
	}
}

// Connections stay when nothing takes them: a final stop (no serving
// generation), the switch turned off, or TLS (its state lives in the
// process). Each is drained as before: the idle connection is closed
// when the drain times out.
func TestHandoff_whatDoesNotMoveStays(t *testing.T) {
	cert := testtls.New(t)
	for _, tc := range []struct {
		name    string
		cfg     Config
		current bool
	}{
		{"final stop", Config{}, false},
		{"switched off", Config{DisableIdleHandoff: true}, true},
		{"tls", Config{HTTP: &http.Server{TLSConfig: cert.ServerConfig()}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := handoff.NewRouter(hclog.NewNullLogger())
			tc.cfg.DrainTimeout = 100 * time.Millisecond
			tc.cfg.ShutdownTimeout = time.Second
			old := startGeneration(t, r, 1, "old", tc.cfg)
			cur := newGeneration(t, r, 2, "new", Config{})
			if tc.current {
				r.SetCurrent(cur.peer)
			}
			var c net.Conn = dialTLS(t, old.s.Addr(), tc.cfg.HTTP != nil, cert)
			br := bufio.NewReader(c)
			io.WriteString(c, post("one"))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			old.stop()
			if err := old.wait(t); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("want the idle connection closed by the drain, read %d bytes", n)
			}
		})
	}
}

// waitReady waits until g said READY=1. Serve serves before baton
// acknowledged its HELLO and says READY=1 only after: from then on the
// router knows it takes connections.
func (g *generation) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-g.s.ready:
	case err := <-g.done:
		g.once.Do(func() { g.err = err })
		t.Fatalf("Serve returned before READY: %v", err)
	}
}

func dialTLS(t *testing.T, addr string, useTLS bool, cert *testtls.Cert) net.Conn {
	t.Helper()
	if !useTLS {
		return dial(t, addr).Conn
	}
	cfg := cert.ClientConfig()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// An idle h2c connection (HTTP/2 without TLS) never moves: the next
// generation would read its frames as HTTP/1.1. At the drain it gets
// GOAWAY and stays open until its client closes it, rather than being cut
// off in the middle of the server's read by the stop that moves an idle
// HTTP/1.1 connection, which lost a request on its way.
func TestHandoff_h2cConnectionGetsGoAway(t *testing.T) {
	h2c := func() Config {
		srv := &http.Server{Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		return Config{HTTP: srv}
	}
	r := handoff.NewRouter(hclog.NewNullLogger())
	old := startGeneration(t, r, 1, "old", h2c())
	cur := startGeneration(t, r, 2, "new", h2c())
	r.SetCurrent(cur.peer)
	c := dial(t, old.s.Addr())
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	// One request, and nothing more from the client: the server's frame
	// reader is in its read when the stream's end makes the connection
	// idle (the server calls ConnState before it sends the end).
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("before the drain: %v", err)
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			break
		}
	}
	old.stop()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the connection ended without GOAWAY: %v", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			break
		}
	}
	c.Close()
	if err := old.wait(t); err != nil {
		t.Fatalf("old drain: %v", err)
	}
}

// A connection that moved is idle, not new, to the server that takes it:
// its header timeout starts at its first byte. A client idle for longer
// than the new server's ReadHeaderTimeout is still answered.
func TestHandoff_movedConnectionIsIdleNotNew(t *testing.T) {
	r := handoff.NewRouter(hclog.NewNullLogger())
	old := newGeneration(t, r, 1, "old", Config{})
	cur := newGeneration(t, r, 2, "new", Config{HTTP: &http.Server{ReadHeaderTimeout: 50 * time.Millisecond}})
	r.SetCurrent(cur.peer)
	c := dial(t, old.s.Addr())
	io.WriteString(c, post("one"))
	c.response(t)
	old.stop()
	if err := old.wait(t); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the client idles: the behaviour under test
	io.WriteString(c, post("two"))
	if body, _ := c.response(t); body != "new:two" {
		t.Fatalf("want new:two, have %q", body)
	}
}

// Serve does not wait for baton's answer to its HELLO before it serves:
// the round trip is off the start-up path. It says READY=1 only once
// baton acknowledged, so that baton knows where idle connections may go
// before it stops the previous generation.
func TestHandoff_servesBeforeTheAckReadyAfter(t *testing.T) {
	peerConn, e := handoffPeer(t)
	s := newTestServer(t, Config{})
	s.endpoint = e // after New: the HELLO waits for Serve
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, echoHandler("gen"))
	defer func() {
		cancel()
		result(t, done)
	}()

	hello := expect(t, peerConn, handoff.Hello)
	c := dial(t, s.Addr())
	defer c.Close()
	io.WriteString(c, post("before the ACK"))
	if body, _ := c.response(t); body != "gen:before the ACK" {
		t.Fatalf("before the ACK: %q", body)
	}
	notReady(t, s, "READY=1 before baton acknowledged the HELLO")
	reply(t, peerConn, handoff.Ack, hello.Listener)
	ready(t, s, done)
}

// With an inherited handoff socket, New says HELLO: baton's answer comes
// while the application starts up, and Serve says READY=1 without
// another message from baton. Its drain's DRAIN is the next message.
func TestHandoff_helloAtNew(t *testing.T) {
	peerConn, e := handoffPeer(t)
	inheritHandoff(t, e)
	s := newTestServer(t, Config{})
	hello := expect(t, peerConn, handoff.Hello)
	reply(t, peerConn, handoff.Ack, hello.Listener)
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, echoHandler("gen"))
	ready(t, s, done)
	cancel()
	expect(t, peerConn, handoff.Drain)
	reply(t, peerConn, handoff.Keep, hello.Listener)
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// A TLSConfig set between New and Serve: Serve takes New's HELLO back
// with a DRAIN before it says READY=1, so that baton never passes it a
// connection whose TLS state it does not have, and serves TLS.
func TestHandoff_tlsAfterNewTakesTheHelloBack(t *testing.T) {
	cert := testtls.New(t)
	peerConn, e := handoffPeer(t)
	inheritHandoff(t, e)
	srv := &http.Server{}
	s := newTestServer(t, Config{HTTP: srv})
	hello := expect(t, peerConn, handoff.Hello)
	reply(t, peerConn, handoff.Ack, hello.Listener)
	srv.TLSConfig = cert.ServerConfig()
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, echoHandler("gen"))
	defer func() {
		cancel()
		result(t, done)
	}()
	expect(t, peerConn, handoff.Drain)
	notReady(t, s, "READY=1 before the HELLO was taken back")
	reply(t, peerConn, handoff.Keep, hello.Listener)
	ready(t, s, done)
	c := dialTLS(t, s.Addr(), true, cert)
	io.WriteString(c, post("tls"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "gen:tls" {
		t.Fatalf("over TLS: %q", b)
	}
}

// handoffPeer returns both ends of a handoff socket: baton's, and the
// process's as an Endpoint.
func handoffPeer(t *testing.T) (*net.UnixConn, *handoff.Endpoint) {
	t.Helper()
	peerConn, f, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peerConn.Close() })
	e, err := handoff.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return peerConn, e
}

// inheritHandoff makes e the handoff socket this process inherited, for
// the servers New makes until the test ends.
func inheritHandoff(t *testing.T, e *handoff.Endpoint) {
	takeEnv()
	was := env.handoff
	env.handoff = e
	t.Cleanup(func() { env.handoff = was })
}

// expect receives the next message on baton's end and fails unless it
// is of kind.
func expect(t *testing.T, peerConn *net.UnixConn, kind string) handoff.Message {
	t.Helper()
	peerConn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf, oob := handoff.NewBuffers()
	m, err := handoff.Receive(peerConn, buf, oob)
	if err != nil || m.Kind != kind {
		t.Fatalf("want %s, have %+v, %v", kind, m, err)
	}
	return m
}

// reply sends baton's answer kind for listener.
func reply(t *testing.T, peerConn *net.UnixConn, kind, listener string) {
	t.Helper()
	if err := handoff.Send(peerConn, handoff.Message{Kind: kind, Listener: listener, FD: -1}); err != nil {
		t.Fatal(err)
	}
}

// ready waits until s said READY=1, and fails if Serve returned first.
func ready(t *testing.T, s *Server, done <-chan error) {
	t.Helper()
	select {
	case <-s.ready:
	case err := <-done:
		t.Fatalf("Serve returned before READY: %v", err)
	}
}

// notReady fails with msg if s said READY=1 already.
func notReady(t *testing.T, s *Server, msg string) {
	t.Helper()
	select {
	case <-s.ready:
		t.Fatal(msg)
	default:
	}
}
