package supervisor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

// A serving generation killed with SIGKILL is restarted, and counted.
func TestRestart_killedChildIsRestarted(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `restart { backoff = "10ms" }`))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID
	syscall.Kill(first, syscall.SIGKILL)
	h.waitEvent("app", "ready", 2)
	st := h.status("app")
	if st.Restarts != 1 || st.PID == first || st.LastExit.Signal != "SIGKILL" {
		t.Fatalf("want a restart after SIGKILL, have %+v, last exit %+v", st, st.LastExit)
	}
	if get(t, h.sup.Addr("app", "http")) != st.PID {
		t.Fatal("the restarted generation does not serve")
	}
	h.stop()
}

// A crash loop backs off: each wait doubles, capped at max_backoff, and
// baton never gives up.
func TestRestart_crashLoopBacksOff(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "crash", `restart {
    backoff     = "20ms"
    max_backoff = "160ms"
  }`))
	h.waitLog("restarting after a backoff", 7)
	re := regexp.MustCompile(`restarting after a backoff.*in=(\S+)`)
	var waits []time.Duration
	for _, m := range re.FindAllStringSubmatch(h.log.String(), -1) {
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, d)
	}
	for i, d := range waits {
		if d > 160*time.Millisecond {
			t.Fatalf("wait %d is %v, above max_backoff", i+1, d)
		}
		if i > 0 && i < 4 && d <= waits[i-1] {
			t.Fatalf("waits do not grow: %v", waits)
		}
	}
	if waits[6] < 128*time.Millisecond {
		t.Fatalf("waits are not capped near max_backoff: %v", waits)
	}
	if st := h.status("app"); st.State != control.StateBackoff && st.State != control.StateStarting {
		t.Fatalf("state: want backoff or starting, have %s", st.State)
	}
	h.stop()
}

// "never" does not restart, says so, keeps the socket, and Start brings
// it back.
func TestRestart_neverAndStart(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `restart { policy = "never" }`))
	h.waitEvent("app", "ready", 1)
	syscall.Kill(h.status("app").PID, syscall.SIGKILL)
	h.waitEvent("app", "exit", 1)
	h.waitLog("not restarting", 1)
	if st := h.status("app"); st.State != control.StateExited || !strings.Contains(st.Reason, "never") {
		t.Fatalf("want exited by policy, have %+v", st)
	}
	if res, err := h.sup.StartProgram(context.Background(), "app"); err != nil || res.Generation != 2 {
		t.Fatalf("Start: %+v %v", res, err)
	}
	h.stop()
}

// Stop stops a program and keeps its socket; requests wait in the accept
// queue and are served once Start brings it back.
func TestStopStart_socketStaysOpen(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	addr := h.sup.Addr("app", "http")
	if err := h.sup.StopProgram(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	if st := h.status("app"); st.State != control.StateStopped || st.Generation != 0 {
		t.Fatalf("after Stop: %+v", st)
	}
	if _, err := h.sup.RestartProgram(context.Background(), "app"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Restart of a stopped program: want ErrStopped, have %v", err)
	}
	conn, err := net.Dial("tcp", addr) // queued, not refused
	if err != nil {
		t.Fatalf("connect while stopped: %v", err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	res, err := h.sup.StartProgram(context.Background(), "app")
	if err != nil || res.Generation != 2 {
		t.Fatalf("Start: %+v %v", res, err)
	}
	b, _ := io.ReadAll(conn)
	if !strings.Contains(string(b), "200 OK") {
		t.Fatalf("the queued request: %q", b)
	}
	h.stop()
}

// Two programs with their own listeners: reloading one leaves the other
// alone.
func TestReload_oneOfTwoPrograms(t *testing.T) {
	h := newHarness(t, fakeProgram("a", "serve", "")+fakeProgram("b", "serve", ""))
	h.waitEvent("a", "ready", 1)
	h.waitEvent("b", "ready", 1)
	pb := h.status("b").PID
	if h.sup.Addr("a", "http") == h.sup.Addr("b", "http") {
		t.Fatal("the programs share a socket")
	}
	results, err := h.sup.Reload(context.Background(), ReloadRequest{Programs: []string{"a"}, Reason: "test", Force: true})
	if err != nil || len(results) != 1 || results[0].Program != "a" || results[0].Generation != 2 {
		t.Fatalf("Reload a: %+v %v", results, err)
	}
	if st := h.status("b"); st.PID != pb || st.Generation != 1 {
		t.Fatalf("b was touched: %+v", st)
	}
	h.stop()
}

// The control socket is 0600, and answers the status of the pid that
// serves.
func TestControl_socket(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	sock := filepath.Join(h.dir, config.DefaultControlSocket)
	st, err := os.Stat(sock)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", st.Mode(), err)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	resp, err := c.Get("http://baton/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pid := get(t, h.sup.Addr("app", "http"))
	if !strings.Contains(string(b), `"pid": `+itoa(pid)) || !strings.Contains(string(b), `"state": "running"`) {
		t.Fatalf("status does not name the serving pid %d: %s", pid, b)
	}
	// A second baton on the same socket is refused; a stale file is not.
	if _, err := listenControl(sock); err == nil || !strings.Contains(err.Error(), "another baton answers") {
		t.Fatalf("second listener: want refused, have %v", err)
	}
	h.stop()
	os.WriteFile(filepath.Join(h.dir, "x"), nil, 0o600)
	l, err := net.Listen("unix", sock) // a socket file nobody will answer on
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := listenControl(sock)
	if err != nil {
		t.Fatalf("a stale socket was not replaced: %v", err)
	}
	l2.Close()
}

func itoa(n int) string { return strconv.Itoa(n) }

// Connections from another uid are refused (SO_PEERCRED), whatever the
// socket's mode.
func TestControl_refusesOtherUsers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Only uid 4242 may connect; the test runs as someone else.
	pl := &peerListener{Listener: l, uid: 4242}
	defer pl.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := pl.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection of another uid was not closed")
	}
	pl.Close()
	if c, ok := <-accepted; ok {
		c.Close()
		t.Fatal("a peer of another uid was accepted")
	}
}

// Metrics count handovers and show the generation that serves.
func TestMetrics(t *testing.T) {
	h := newHarness(t, "metrics { address = \"127.0.0.1:0\" }\n"+fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + h.sup.metricsLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`baton_program_handovers_total{program="app"} 1`,
		`baton_program_generation{program="app"} 2`,
		`baton_program_up{program="app"} 1`,
		`baton_program_restarts_total{program="app"} 0`,
		`baton_handover_duration_seconds_count{program="app"} 1`,
		`baton_process_resident_memory_bytes`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	h.stop()
}

// clean_env starts a program with PATH, its env and the protocol
// variables only, not with baton's environment.
func TestCleanEnv(t *testing.T) {
	t.Setenv("BATON_TEST_INHERITED", "leaked")
	h := newHarness(t, withEnv(fakeProgram("app", "serve", "clean_env = true"), "serve", `OWN = "kept"`))
	h.waitEvent("app", "ready", 1)
	env := proctest.Get(t, "http://"+h.sup.Addr("app", "http")+"/env")
	for _, want := range []string{"OWN=kept\n", "PATH=", "BATON_PROGRAM=app\n", "BATON_GENERATION=1\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("the environment lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(env, "BATON_TEST_INHERITED") {
		t.Errorf("baton's environment reached the program:\n%s", env)
	}
	h.stop()
}
