package child

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/hashicorp/go-hclog"
)

// lameDuckServer serves Health on /healthz and "ok" elsewhere with its
// stop signal SIGUSR1 (sent to this test process), and waits until it
// serves. The log goes to the returned buffer.
func lameDuckServer(t *testing.T, cfg Config) (*Server, *proctest.Buffer, <-chan error) {
	t.Helper()
	log := proctest.NewBuffer()
	cfg.Signals = []os.Signal{syscall.SIGUSR1}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: log, Level: hclog.Debug})
	s := newTestServer(t, cfg)
	mux := http.NewServeMux()
	mux.Handle("/healthz", s.Health())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	done := serve(s, context.Background(), mux)
	if _, ok := log.Wait("serving", 1, 10*time.Second); !ok {
		t.Fatalf("not serving; log:\n%s", log)
	}
	return s, log, done
}

func signalSelf(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
}

// In the lame duck, the server still accepts new connections and serves
// them, every response closes its connection, and Health answers 503;
// the drain has not begun. A second signal ends the lame duck, and the
// drain runs as without one.
func TestLameDuck_keepsAcceptingThenDrains(t *testing.T) {
	s, log, done := lameDuckServer(t, Config{LameDuck: time.Hour})
	idle := dial(t, s.Addr())
	if resp := idle.get(t, "/"); resp.Close {
		t.Fatal("keep-alive connection closed before the stop signal")
	}
	signalSelf(t)
	if _, ok := log.Wait("lame duck: ", 1, 10*time.Second); !ok {
		t.Fatalf("no lame duck; log:\n%s", log)
	}
	if resp := idle.get(t, "/"); !resp.Close || resp.StatusCode != 200 {
		t.Fatalf("in the lame duck, on a kept connection: want 200 with Connection: close, have %d close=%v", resp.StatusCode, resp.Close)
	}
	fresh := dial(t, s.Addr()) // the listener still accepts
	if resp := fresh.get(t, "/healthz"); resp.StatusCode != 503 || !resp.Close {
		t.Fatalf("health in the lame duck: want 503 with Connection: close, have %d close=%v", resp.StatusCode, resp.Close)
	}
	if s.Draining() {
		t.Fatal("the drain began during the lame duck")
	}
	select {
	case <-s.Stopping():
		t.Fatal("Stopping closed during the lame duck")
	default:
	}
	signalSelf(t)
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
	if _, ok := log.Wait("lame duck cut short", 1, time.Second); !ok {
		t.Fatalf("want the second signal to cut the lame duck short; log:\n%s", log)
	}
}

// The lame duck ends by itself, and the drain follows.
func TestLameDuck_endsByItself(t *testing.T) {
	_, log, done := lameDuckServer(t, Config{LameDuck: 50 * time.Millisecond})
	signalSelf(t)
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
	if out := log.String(); !containsInOrder(out, "lame duck: ", "draining", "drained") {
		t.Fatalf("want the lame duck, then the drain; log:\n%s", out)
	}
}

// The environment variable tunes a binary without a rebuild; under baton
// there is no lame duck: the drain begins at the stop signal.
func TestLameDuck_environmentAndBaton(t *testing.T) {
	for _, tc := range []struct {
		cfg  time.Duration
		env  string
		want time.Duration
		err  bool
	}{
		{0, "", 0, false},
		{5 * time.Second, "", 5 * time.Second, false},
		{5 * time.Second, "15s", 15 * time.Second, false},
		{5 * time.Second, "0", 0, false},
		{5 * time.Second, "soon", 5 * time.Second, true},
		{0, "-1s", 0, true},
	} {
		have, err := lameDuckFrom(tc.cfg, tc.env)
		if have != tc.want || (err != nil) != tc.err {
			t.Errorf("lameDuckFrom(%v, %q): want %v (error %v), have %v, %v", tc.cfg, tc.env, tc.want, tc.err, have, err)
		}
	}

	t.Setenv(EnvLameDuck, "1h")
	t.Setenv("BATON_PROGRAM", "orders")
	s, log, done := lameDuckServer(t, Config{})
	signalSelf(t)
	select {
	case <-s.Stopping():
	case <-time.After(10 * time.Second): // with the lame duck of an hour, it would not come
		t.Fatalf("the drain did not begin at the stop signal; log:\n%s", log)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("Serve: want nil, have %v", err)
	}
	if out := log.String(); !containsInOrder(out, "no lame duck under baton", "draining") || containsInOrder(out, "lame duck: ") {
		t.Fatalf("want no lame duck under baton; log:\n%s", out)
	}
}

// containsInOrder reports whether s holds each of subs, in that order.
func containsInOrder(s string, subs ...string) bool {
	for _, sub := range subs {
		i := strings.Index(s, sub)
		if i < 0 {
			return false
		}
		s = s[i+len(sub):]
	}
	return true
}
