package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/testtls"
	"github.com/coder/websocket"
)

// fakeChildren are this package's fake children: the test binary
// re-executed as a real process.
var fakeChildren = map[string]func() int{
	// ws-ignore: a WebSocket handler that ignores the drain, under a
	// drain timeout of 200 ms.
	"ws-ignore": func() int {
		s, err := New(Config{Addr: "127.0.0.1:0", DrainTimeout: 200 * time.Millisecond})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return ExitFailure
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.Write(r.Context(), websocket.MessageText, []byte("hello"))
			c.Read(context.Background()) // until the connection dies
		})
		return ExitCode(s.Serve(context.Background(), h))
	},
}

// goodbyeHandler is the WebSocket handler of the documentation: it
// streams until the drain begins, then says goodbye with 1001.
func goodbyeHandler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(r.Context())
		drain := DrainContext(ctx)
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			return
		}
		<-drain.Done()
		if errors.Is(context.Cause(drain), ErrDraining) {
			c.Close(websocket.StatusGoingAway, "restarting: reconnect")
		}
	})
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("first message: want hello, have %q (%v)", msg, err)
	}
	return c
}

// A WebSocket open when the drain begins is told through DrainContext;
// its client gets Close 1001 Going Away, and the drain cuts nothing off.
func TestDrainContext_webSocketGetsGoingAway(t *testing.T) {
	s := newTestServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, goodbyeHandler(t))
	c := dialWS(t, "ws://"+s.Addr()+"/")

	cancel()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	_, _, err := c.Read(rctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "restarting: reconnect" {
		t.Fatalf("want close 1001 with a reason, have %v", err)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
}

// A WebSocket handler that ignores the drain: a real process, a real
// client. Its connection is counted in the drain and closed at the drain
// timeout (no 1001 reaches the client), and the process says so and exits
// ExitAbandoned.
func TestDrain_hijackedConnectionIgnoringTheDrainIsCutAndCounted(t *testing.T) {
	p := proctest.Start(t, proctest.Self("ws-ignore"))
	m := regexp.MustCompile(`serving: addr=(\S+)`).FindStringSubmatch(p.WaitOutput("serving: addr=", 30*time.Second))
	c := dialWS(t, "ws://"+m[1]+"/")

	p.Signal(syscall.SIGTERM)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	_, _, err := c.Read(rctx)
	if err == nil || websocket.CloseStatus(err) != -1 || rctx.Err() != nil {
		t.Fatalf("want the connection cut without a close frame, have %v", err)
	}
	code, sig := proctest.ExitCode(p.Wait(30 * time.Second))
	if code != ExitAbandoned || sig != "" {
		t.Fatalf("exit: want %d, have %d %s; output:\n%s", ExitAbandoned, code, sig, p.Output())
	}
	line := p.WaitOutput("hijacked connections cut off", time.Second)
	if !strings.Contains(line, "connections=1") {
		t.Fatalf("want one connection counted, have %q", line)
	}
}

// The same in-process, for the error value: DrainError counts it.
func TestDrain_hijackedCountedInDrainError(t *testing.T) {
	s := newTestServer(t, Config{DrainTimeout: 50 * time.Millisecond})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Write(r.Context(), websocket.MessageText, []byte("hello"))
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, h)
	dialWS(t, "ws://"+s.Addr()+"/")
	cancel()
	err := result(t, done)
	close(release)
	var derr *DrainError
	if !errors.As(err, &derr) || derr.Hijacked != 1 || !strings.Contains(err.Error(), "1 hijacked connections") {
		t.Fatalf("want a DrainError with 1 hijacked connection, have %v", err)
	}
}

// A Server-Sent Events stream learns of the drain from DrainContext, with
// ErrDraining as the cause, and ends with a reconnect hint; the client
// reads a complete response. A client that goes away cancels the context
// with another cause.
func TestDrainContext_sseEndsWithRetryHint(t *testing.T) {
	s := newTestServer(t, Config{})
	causes := make(chan error, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := DrainContext(r.Context())
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 7\ndata: first\n\n")
		http.NewResponseController(w).Flush()
		<-ctx.Done()
		causes <- context.Cause(ctx)
		if errors.Is(context.Cause(ctx), ErrDraining) {
			fmt.Fprint(w, "retry: 100\nid: 7\nevent: goodbye\ndata: reconnect\n\n")
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, h)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	// A client that goes away.
	gone, goneCancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(gone, "GET", "http://"+s.Addr()+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	goneCancel()
	resp.Body.Close()
	if c := <-causes; errors.Is(c, ErrDraining) || c == nil {
		t.Fatalf("client gone: want a cause other than ErrDraining, have %v", c)
	}

	// A client at the drain.
	resp, err = client.Get("http://" + s.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "id: 7\n" {
		t.Fatalf("first line: %q", line)
	}
	cancel()
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
	if !strings.Contains(string(rest), "retry: 100\nid: 7\nevent: goodbye\n") {
		t.Fatalf("want the reconnect hint at the end, have %q", rest)
	}
	if c := <-causes; !errors.Is(c, ErrDraining) {
		t.Fatalf("drain: want cause ErrDraining, have %v", c)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
}

func TestDrainContext_outsideAServerUnchanged(t *testing.T) {
	ctx := context.Background()
	if DrainContext(ctx) != ctx {
		t.Fatal("a context no Server serves: want it unchanged")
	}
}

// With a TLS configuration, Serve serves TLS: HTTP/1.1 and HTTP/2 to real
// clients that check the certificate.
func TestServe_tls(t *testing.T) {
	cert := testtls.New(t)
	s := newTestServer(t, Config{HTTP: &http.Server{TLSConfig: cert.ServerConfig()}})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	for _, tc := range []struct {
		h2   bool
		want string
	}{{false, "HTTP/1.1"}, {true, "HTTP/2.0"}} {
		tr := &http.Transport{TLSClientConfig: cert.ClientConfig(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(!tc.h2)
		tr.Protocols.SetHTTP2(tc.h2)
		resp, err := (&http.Client{Transport: tr}).Get("https://" + s.Addr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.TLS == nil || string(b) != tc.want || resp.Proto != tc.want {
			t.Fatalf("want %s over TLS, have %s (served %q), TLS %v", tc.want, resp.Proto, b, resp.TLS != nil)
		}
	}
	cancel()
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// http2Setup is a server and a client transport that speak HTTP/2 to
// each other, and the scheme of its URLs.
type http2Setup struct {
	name   string
	scheme string
	srv    func() *http.Server
	tr     func() *http.Transport
}

// http2Setups are HTTP/2 over TLS and unencrypted (h2c), each with the
// client speaking nothing else.
func http2Setups(t *testing.T) []http2Setup {
	cert := testtls.New(t)
	return []http2Setup{
		{"tls", "https",
			func() *http.Server { return &http.Server{TLSConfig: cert.ServerConfig()} },
			func() *http.Transport {
				tr := &http.Transport{TLSClientConfig: cert.ClientConfig(), Protocols: new(http.Protocols)}
				tr.Protocols.SetHTTP2(true)
				return tr
			}},
		{"h2c", "http",
			func() *http.Server {
				srv := &http.Server{Protocols: new(http.Protocols)}
				srv.Protocols.SetHTTP1(true)
				srv.Protocols.SetUnencryptedHTTP2(true)
				return srv
			},
			func() *http.Transport {
				tr := &http.Transport{Protocols: new(http.Protocols)}
				tr.Protocols.SetUnencryptedHTTP2(true)
				return tr
			}},
	}
}

// HTTP/2 at the drain, over TLS and h2c: the stream in flight completes,
// and a connection with no stream gets GOAWAY at once, so the drain does
// not wait for its drain timeout (a minute here, longer than result
// waits).
func TestDrain_http2GoAway(t *testing.T) {
	for _, tc := range http2Setups(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{HTTP: tc.srv(), DrainTimeout: time.Minute})
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			mux := http.NewServeMux()
			mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
			mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				<-release
				io.WriteString(w, "done")
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := serve(s, ctx, mux)
			url := tc.scheme + "://" + s.Addr()

			// An idle HTTP/2 connection, and one with a stream in flight.
			idle := &http.Client{Transport: tc.tr()}
			resp, err := idle.Get(url + "/fast")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "HTTP/2.0" {
				t.Fatalf("want HTTP/2, served %q", b)
			}
			busy := &http.Client{Transport: tc.tr()}
			inflight := make(chan error, 1)
			go func() {
				resp, err := busy.Get(url + "/slow")
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && string(b) != "done" {
						err = fmt.Errorf("body %q", b)
					}
				}
				inflight <- err
			}()
			<-started
			cancel()
			<-s.Stopping()
			close(release)
			if err := <-inflight; err != nil {
				t.Fatalf("the stream in flight at the drain failed: %v", err)
			}
			if err := result(t, done); err != nil {
				t.Fatalf("Serve: want nil, have %v", err)
			}
		})
	}
}

// A keep-alive connection whose long-lived response was told of the drain
// is closed when that response ends: the client reconnects on a new
// connection, to the next generation, instead of reaching this process
// once more. (The drain timeout is a minute, longer than the read waits:
// without this the connection would stay open until then.)
func TestDrainContext_connectionClosedWhenTheStreamEnds(t *testing.T) {
	s := newTestServer(t, Config{DrainTimeout: time.Minute})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := DrainContext(r.Context())
		fmt.Fprint(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		<-ctx.Done()
		fmt.Fprint(w, "retry: 100\nevent: goodbye\ndata: reconnect\n\n")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(s, ctx, h)
	c := dial(t, s.Addr())
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatal("a response begun before the drain says Connection: close")
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the stream: want the connection closed (EOF), have %v %v", n, err)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
}

// An HTTP/2 stream told of the drain keeps its last words: the goodbye
// the handler writes as it returns, which the HTTP/2 server sends only
// after the stream's end, reaches the client, and the body ends cleanly.
// Closing the connection as an HTTP/1.1 one is closed after its long-lived
// response (the test above) would cut off what the HTTP/2 server still
// held; GOAWAY closes it instead, once its streams are done.
func TestDrainContext_http2StreamKeepsItsGoodbye(t *testing.T) {
	for _, tc := range http2Setups(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{HTTP: tc.srv(), DrainTimeout: time.Minute})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := DrainContext(r.Context())
				fmt.Fprint(w, "data: first\n\n")
				http.NewResponseController(w).Flush()
				<-ctx.Done()
				fmt.Fprint(w, "event: goodbye\ndata: reconnect\n\n") // no Flush: the end of the stream sends it
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := serve(s, ctx, h)
			c := &http.Client{Transport: tc.tr()}
			defer c.CloseIdleConnections()
			resp, err := c.Get(tc.scheme + "://" + s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("want HTTP/2, served %s", resp.Proto)
			}
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); line != "data: first\n" {
				t.Fatalf("first event: %q %v", line, err)
			}
			cancel()
			rest, err := io.ReadAll(br)
			if err != nil || !strings.Contains(string(rest), "event: goodbye") {
				t.Fatalf("after the drain began: want the goodbye and a clean end, have %q, %v", rest, err)
			}
			if err := result(t, done); err != nil {
				t.Fatalf("Serve: want nil, have %v", err)
			}
		})
	}
}

// nopWriter is a ResponseWriter that allocates nothing.
type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w nopWriter) WriteHeader(int)             {}

// Long-lived connections cost a plain request nothing: the server's wrap
// allocates its response writer and nothing else per request (the
// server and the connection reach the request's context once per
// listener and per connection).
func TestWrap_plainRequestAllocatesOnlyItsWriter(t *testing.T) {
	s := newTestServer(t, Config{})
	defer unserved(s)
	body := []byte("ok")
	h := s.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	w := nopWriter{h: http.Header{}}
	r := httptest.NewRequest("GET", "/", nil)
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r) }); n != 1 {
		t.Fatalf("want 1 allocation per plain request (the drain's writer), have %v", n)
	}
}
