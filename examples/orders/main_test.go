package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/baton-run/baton/internal/execshim"
	"github.com/baton-run/baton/internal/loadgen"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/streams"
)

func TestMain(m *testing.M) {
	proctest.Main(m, map[string]func() int{
		"orders":         func() int { return run(options{}) },
		"orders-migrate": migrate,
		// A database that takes 100 ms per batch, and a task deadline
		// far too short to write the backlog a load leaves.
		"orders-slow": func() int {
			return run(options{
				flushDelay: 100 * time.Millisecond,
				child:      child.Config{TaskTimeout: 300 * time.Millisecond},
			})
		},
	})
}

const waitLong = 30 * time.Second

var serveAddr = regexp.MustCompile(`serving: addr=(\S+)`)

// startOrders starts the example as a fake child and returns it with the
// address it serves on, read from its log.
func startOrders(t *testing.T, name string, cmd *exec.Cmd) (*proctest.Proc, string) {
	t.Helper()
	p := proctest.Start(t, cmd)
	line := p.WaitOutput("serving: addr=", waitLong)
	m := serveAddr.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	return p, m[1]
}

func exitCode(t *testing.T, p *proctest.Proc) int {
	t.Helper()
	code, sig := proctest.ExitCode(p.Wait(waitLong))
	if sig != "" {
		t.Fatalf("killed by %s; output:\n%s", sig, p.Output())
	}
	return code
}

// The original report: a Gin server that acknowledged 6,000 orders lost
// part of them when it was stopped. Under load, SIGTERM must lose none.
func TestSIGTERMUnderLoad_noAcknowledgedOrderLost(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	p, addr := startOrders(t, "orders", proctest.Self("orders", "ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+db))

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16, MaxRequests: 200000})
	if !load.WaitAcked(6000, waitLong) {
		load.Stop()
		t.Fatalf("fewer than 6000 orders acknowledged; output:\n%s", p.Output())
	}
	p.Signal(syscall.SIGTERM)
	code := exitCode(t, p)
	res := load.Stop()

	if code != child.ExitOK {
		t.Fatalf("exit status: want %d, have %d; output:\n%s", child.ExitOK, code, p.Output())
	}
	if len(res.Acked) < 6000 {
		t.Fatalf("acknowledged: want at least 6000, have %d", len(res.Acked))
	}
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders are not in the database, e.g. %q", len(missing), len(res.Acked), missing[0])
	}
	if left := journalFiles(t, db); len(left) > 0 {
		t.Fatalf("everything was written, yet the journal keeps %v", left)
	}
	t.Logf("%d orders acknowledged, all written; %d requests failed after the socket closed (%v)",
		len(res.Acked), res.FailedTotal(), res.Failed)
}

// journalFiles lists the journal beside db.
func journalFiles(t *testing.T, db string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(journalDir(db, ""), "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Without the journal, a database too slow for the task deadline: the
// drain cuts the writer off, exits with ExitAbandoned and says how many
// orders it abandoned.
func TestSlowDatabase_deadlineAbandonsAndSaysHowMany(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	p, addr := startOrders(t, "orders-slow", proctest.Self("orders-slow", "ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+db, "ORDERS_JOURNAL=off"))

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16, MaxRequests: 200000})
	if !load.WaitAcked(5000, waitLong) {
		load.Stop()
		t.Fatalf("fewer than 5000 orders acknowledged; output:\n%s", p.Output())
	}
	p.Signal(syscall.SIGTERM)
	code := exitCode(t, p)
	res := load.Stop()

	if code != child.ExitAbandoned {
		t.Fatalf("exit status: want %d, have %d; output:\n%s", child.ExitAbandoned, code, p.Output())
	}
	line := p.WaitOutput("background work abandoned", time.Second)
	m := regexp.MustCompile(`pending=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no pending count in %q", line)
	}
	pending, _ := strconv.Atoi(m[1])
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if pending == 0 || len(missing) == 0 {
		t.Fatalf("want orders abandoned, have pending=%d and %d missing", pending, len(missing))
	}
	// The count in the log covers every order that did not land (a batch
	// cut off in the middle of its commit may still have landed).
	if len(missing) > pending {
		t.Fatalf("the log says %d abandoned, but %d acknowledged orders are missing", pending, len(missing))
	}
	t.Logf("%d acknowledged, %d missing, log says %d pending", len(res.Acked), len(missing), pending)
}

// With the journal, the same cut-off drain loses nothing: the orders it
// could not write stay in the journal, and the next start writes them.
func TestSlowDatabase_journalKeepsWhatTheDeadlineCutOff(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	p, addr := startOrders(t, "orders-slow", proctest.Self("orders-slow", "ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+db))

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16, MaxRequests: 200000})
	if !load.WaitAcked(5000, waitLong) {
		load.Stop()
		t.Fatalf("fewer than 5000 orders acknowledged; output:\n%s", p.Output())
	}
	p.Signal(syscall.SIGTERM)
	code := exitCode(t, p)
	res := load.Stop()
	if code != child.ExitAbandoned {
		t.Fatalf("exit status: want %d, have %d; output:\n%s", child.ExitAbandoned, code, p.Output())
	}
	cut, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(cut) == 0 {
		t.Fatal("the deadline cut nothing off: the test proves nothing")
	}

	next, _ := startOrders(t, "orders", proctest.Self("orders", "ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+db))
	next.WaitOutput("journal: replay of dead writers done", waitLong)
	next.Signal(syscall.SIGTERM)
	if code := exitCode(t, next); code != child.ExitOK {
		t.Fatalf("next start: exit status %d; output:\n%s", code, next.Output())
	}
	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders lost after the next start, e.g. %q", len(missing), len(res.Acked), missing[0])
	}
	if left := journalFiles(t, db); len(left) > 0 {
		t.Fatalf("everything was written, yet the journal keeps %v", left)
	}
	t.Logf("%d acknowledged, %d cut off by the deadline, all written after the next start", len(res.Acked), len(cut))
}

// SIGKILL at random moments under 16 POST clients, 20 times in a row, as
// the OOM killer or a stop timeout would: each start replays what the
// killed ones acknowledged and did not write (itself possibly killed in
// the middle of that replay), and once the last one has replayed, every
// acknowledged order is a row.
func TestSIGKILLUnderLoad_journalLosesNothing(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "orders.db")
	addr := proctest.FreeAddr(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 16})
	defer load.Stop()
	const kills = 20
	for i := 1; i <= kills; i++ {
		p, _ := startOrders(t, "orders", proctest.Self("orders", "ORDERS_ADDR="+addr, "ORDERS_DB="+db))
		if !load.WaitAcked(load.Acked()+50+rng.Int64N(600), waitLong) {
			t.Fatalf("kill %d: the load stalled; output:\n%s", i, p.Output())
		}
		p.Signal(syscall.SIGKILL)
		p.Wait(waitLong)
	}
	p, _ := startOrders(t, "orders", proctest.Self("orders", "ORDERS_ADDR="+addr, "ORDERS_DB="+db))
	p.WaitOutput("journal: replay of dead writers done", waitLong)
	load.WaitAcked(load.Acked()+100, waitLong)
	res := load.Stop()
	p.Signal(syscall.SIGTERM)
	if code := exitCode(t, p); code != child.ExitOK {
		t.Fatalf("last start: exit status %d; output:\n%s", code, p.Output())
	}

	missing, err := loadgen.MissingOrders(db, res.Acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders lost after %d SIGKILLs, e.g. %q", len(missing), len(res.Acked), kills, missing[0])
	}
	if left := journalFiles(t, db); len(left) > 0 {
		t.Fatalf("everything was written, yet the journal keeps %v", left)
	}
	t.Logf("%d SIGKILLs: %d orders acknowledged, all written; %d requests failed (%v)", kills, len(res.Acked), res.FailedTotal(), res.Failed)
}

// listenTCP opens a listening socket the way a supervisor does: with
// syscalls, in blocking mode, so that os/exec's Fd() changes nothing.
func listenTCP(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	port := sa.(*syscall.SockaddrInet4).Port
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	return f, fmt.Sprintf("127.0.0.1:%d", port)
}

type health struct {
	Status     string `json:"status"`
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
}

func getHealth(t *testing.T, addr string) health {
	t.Helper()
	// No keep-alive: an idle connection left in a client pool would hold
	// the drain until its timeout.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// Playing the supervisor: the socket arrives as fd 3 with the systemd
// variables, LISTEN_PID set by the exec shim to the child's own pid.
func TestInheritedSocket_servedByName(t *testing.T) {
	f, addr := listenTCP(t)
	// ORDERS_ADDR points at a port that is taken: binding it would fail,
	// so serving proves that the inherited socket was used.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	argv, sel := proctest.SelfArgv("orders")
	cmd := exec.Command(execshim.Self)
	cmd.Args = execshim.Args(argv[0], argv)
	cmd.Env = append(os.Environ(), sel, execshim.EnvMarker+"=1",
		"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "BATON_GENERATION=7",
		"ORDERS_ADDR="+taken.Addr().String(), "ORDERS_DB="+filepath.Join(t.TempDir(), "orders.db"))
	cmd.ExtraFiles = []*os.File{f}
	p, served := startOrders(t, "orders", cmd)
	if served != addr {
		t.Fatalf("serving on %s, want the inherited %s", served, addr)
	}
	h := getHealth(t, addr)
	if h.PID != cmd.Process.Pid || h.Generation != 7 || h.Status != "ok" {
		t.Fatalf("healthz: want ok pid %d generation 7, have %+v", cmd.Process.Pid, h)
	}
	p.Signal(syscall.SIGTERM)
	if code := exitCode(t, p); code != 0 {
		t.Fatalf("exit status %d; output:\n%s", code, p.Output())
	}
}

// sd_listen_fds(3): sockets whose LISTEN_PID is another process are not
// ours. The child ignores them, says so, and binds its own address.
func TestInheritedSocket_wrongListenPIDIgnored(t *testing.T) {
	f, addr := listenTCP(t)
	cmd := proctest.Self("orders", "LISTEN_FDS=1", "LISTEN_FDNAMES=http", "LISTEN_PID=1",
		"ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+filepath.Join(t.TempDir(), "orders.db"))
	cmd.ExtraFiles = []*os.File{f}
	p, served := startOrders(t, "orders", cmd)
	if served == addr {
		t.Fatalf("served on the inherited socket %s despite LISTEN_PID=1", addr)
	}
	if !strings.Contains(p.Output(), "LISTEN_PID=1 is not this process") {
		t.Fatalf("no log line explaining why the sockets were ignored; output:\n%s", p.Output())
	}
	if h := getHealth(t, served); h.PID != cmd.Process.Pid {
		t.Fatalf("healthz on %s answered by pid %d, want %d", served, h.PID, cmd.Process.Pid)
	}
	p.Signal(syscall.SIGTERM)
	if code := exitCode(t, p); code != 0 {
		t.Fatalf("exit status %d; output:\n%s", code, p.Output())
	}
}

// The notify socket sees READY=1 once the child serves and STOPPING=1
// when the drain begins, in that order, then progress in STATUS lines.
func TestNotify_readyThenStopping(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(waitLong):
			t.Fatal("no notify message")
			return ""
		}
	}

	p, _ := startOrders(t, "orders", proctest.Self("orders", "NOTIFY_SOCKET="+sock,
		"ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+filepath.Join(dir, "orders.db")))
	if m := next(); !strings.Contains(m, "READY=1") {
		t.Fatalf("first message: want READY=1, have %q", m)
	}
	p.Signal(syscall.SIGTERM)
	if m := next(); !strings.Contains(m, "STOPPING=1") {
		t.Fatalf("second message: want STOPPING=1, have %q", m)
	}
	var last string
	for m := range drain(msgs, p) {
		last = m
	}
	if last != "STATUS=drained" {
		t.Fatalf("last message: want STATUS=drained, have %q", last)
	}
}

// drain yields the messages that arrive until the process exited.
func drain(msgs <-chan string, p *proctest.Proc) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		for {
			select {
			case m := <-msgs:
				out <- m
			case <-p.Done():
				for {
					select {
					case m := <-msgs:
						out <- m
					default:
						return
					}
				}
			}
		}
	}()
	return out
}

// The example under the real systemd tool: systemd-socket-activate binds
// the socket, execs the program on the first connection and passes the
// socket as fd 3 named "http".
func TestSystemdSocketActivate(t *testing.T) {
	tool := proctest.RequireTool(t, "systemd-socket-activate")
	dir := t.TempDir()
	sock := filepath.Join(dir, "orders.sock")
	argv, sel := proctest.SelfArgv("orders")
	cmd := exec.Command(tool, append([]string{"-l", sock, "--fdname=http",
		"-E", sel, "-E", "ORDERS_DB=" + filepath.Join(dir, "orders.db"), "-E", "ORDERS_ADDR=127.0.0.1:1"}, argv...)...)
	p := proctest.Start(t, cmd)
	p.WaitOutput("Listening on", waitLong)

	load := loadgen.Start(context.Background(), loadgen.Config{Addr: "unix:" + sock, Clients: 4, MaxRequests: 500})
	<-load.Done()
	res := load.Stop()
	if res.OK != 500 || len(res.Acked) != 500 {
		t.Fatalf("want 500 orders acknowledged, have %d (failed %v %v); output:\n%s", len(res.Acked), res.Failed, res.Examples, p.Output())
	}
	p.WaitOutput("serving: addr=unix:"+sock, waitLong)
	p.Signal(syscall.SIGTERM)
	if code := exitCode(t, p); code != 0 {
		t.Fatalf("exit status %d; output:\n%s", code, p.Output())
	}
	missing, err := loadgen.MissingOrders(filepath.Join(dir, "orders.db"), res.Acked)
	if err != nil || len(missing) > 0 {
		t.Fatalf("missing %d orders (%v)", len(missing), err)
	}
}

// The two streams of orders, from a real process to real clients: a
// client resuming after an id gets every order written after it, once and
// in order, with the running count; at SIGTERM the SSE stream ends with
// its goodbye (retry hint and last id) and the WebSocket closes with 1001,
// and the process exits 0: nothing was cut off.
func TestStreams_resumeAndSayGoodbye(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	p, addr := startOrders(t, "orders", proctest.Self("orders", "ORDERS_ADDR=127.0.0.1:0", "ORDERS_DB="+db))
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: addr, Clients: 2, MaxRequests: 200})
	<-load.Done()
	if res := load.Stop(); len(res.Acked) != 200 {
		t.Fatalf("want 200 orders acknowledged, have %d (%v)", len(res.Acked), res.Examples)
	}
	sse := streams.Follow(context.Background(), streams.Config{Kind: streams.SSE, Addr: addr, Last: 0, Once: true})
	ws := streams.Follow(context.Background(), streams.Config{Kind: streams.WebSocket, Addr: addr, Last: 50, Once: true})
	for _, c := range []*streams.Client{sse, ws} {
		if !c.Wait(waitLong, func(st streams.Stats) bool { return st.Last >= 200 }) {
			t.Fatalf("%s: want events up to 200, have %+v; output:\n%s", c.Stats().Kind, c.Stats(), p.Output())
		}
	}
	p.Signal(syscall.SIGTERM)
	for _, tc := range []struct {
		c      *streams.Client
		events int64
	}{{sse, 200}, {ws, 150}} {
		if !tc.c.Wait(waitLong, func(s streams.Stats) bool { return s.Goodbyes > 0 || s.Abnormal > 0 }) {
			t.Fatalf("no goodbye: %+v", tc.c.Stats())
		}
		st := tc.c.Stop()
		if st.Goodbyes != 1 || st.Abnormal != 0 || st.Connects != 1 || st.PIDs[0] != p.Cmd.Process.Pid {
			t.Fatalf("%s: want one connection to pid %d ended by a goodbye, have %+v", st.Kind, p.Cmd.Process.Pid, st)
		}
		if st.Events != tc.events || st.Missed != 0 || st.Repeated != 0 || st.Last != 200 {
			t.Fatalf("%s: want %d events up to 200, none missed or repeated, have %+v", st.Kind, tc.events, st)
		}
	}
	if code := exitCode(t, p); code != child.ExitOK {
		t.Fatalf("exit status %d; output:\n%s", code, p.Output())
	}
}

// "orders migrate" creates the schema and exits 0; a database it cannot
// create exits non-zero.
func TestMigrate(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	p := proctest.Start(t, proctest.Self("orders-migrate", "ORDERS_DB="+db))
	if code := exitCode(t, p); code != 0 {
		t.Fatalf("migrate: exit %d; output:\n%s", code, p.Output())
	}
	if missing, err := loadgen.MissingOrders(db, nil); err != nil || len(missing) != 0 {
		t.Fatalf("the schema is not there: %v", err)
	}
	p = proctest.Start(t, proctest.Self("orders-migrate", "ORDERS_DB="+filepath.Join(db, "not-a-dir", "x.db")))
	if code := exitCode(t, p); code == 0 {
		t.Fatalf("migrate into a path that cannot be: exit 0; output:\n%s", p.Output())
	}
}
