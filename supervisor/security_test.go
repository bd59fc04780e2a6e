package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
	"github.com/hashicorp/go-hclog"
)

// A process that is not of the generation cannot make it ready through
// its notify socket, nor stall its start: its messages are refused, once
// logged, and the generation fails its ready timeout as it should.
func TestNotify_strangersAreRefused(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "never-ready", `ready { timeout = "2s" }
  restart { policy = "never" }`))
	line := h.waitLog("notify socket ", 1)
	m := regexp.MustCompile(`notify socket (\S+\.sock)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no path in %q", line)
	}
	for _, msg := range []string{"READY=1", "EXTEND_TIMEOUT_USEC=3600000000", "READY=1\nSTATUS=spoofed"} {
		if err := protocol.Notify(m[1], msg); err != nil {
			t.Fatal(err)
		}
	}
	refused := h.waitLog("notify message refused", 1)
	if !strings.Contains(refused, "sender_pid="+strconv.Itoa(os.Getpid())) {
		t.Fatalf("the refusal does not name the sender: %s", refused)
	}
	h.waitLog("start failed", 1)
	st := h.status("app")
	if st.State != control.StateExited || st.Status == "spoofed" || !strings.Contains(st.LastError, "not ready within 2s") {
		t.Fatalf("a stranger's message counted: %+v", st)
	}
	if n := h.log.Count("notify message refused"); n != 1 {
		t.Fatalf("want one refusal logged for one sender, have %d", n)
	}
	h.stop()
}

// Programs whose names share their first 40 characters each have a notify
// socket of their own.
func TestNotify_socketsOfLongNamesDoNotCollide(t *testing.T) {
	long := strings.Repeat("a", 40)
	h := newHarness(t, fakeProgram(long+"-one", "serve", "")+fakeProgram(long+"-two", "serve", ""))
	h.waitEvent(long+"-one", "ready", 1)
	h.waitEvent(long+"-two", "ready", 1)
	h.stop()
}

// The control socket's directory must be baton's user's alone: a
// directory others can write, or that another user owns, is refused at
// start with what to fix, and nothing is left open.
func TestControl_directoryMustBePrivate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"writable by others", func(dir string) error { return os.Chmod(dir, 0o777) }, "is writable by other users (mode 0777)"},
		{"writable by the group", func(dir string) error { return os.Chmod(dir, 0o770) }, "chmod go-w"},
		{"owned by another user", func(dir string) error {
			if os.Geteuid() != 0 {
				t.Skip("giving a directory to another user needs root")
			}
			return os.Chown(dir, 65534, 65534)
		}, "belongs to uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "config.hcl")
			os.WriteFile(file, []byte(fakeProgram("app", "serve", "")), 0o644)
			ctl := filepath.Join(dir, ".baton")
			if err := os.Mkdir(ctl, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(ctl); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{File: file, Logger: hclog.NewNullLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, have %v", tc.want, err)
			}
			if _, err := os.Stat(filepath.Join(ctl, "control.sock")); err == nil {
				t.Fatal("a control socket was created")
			}
		})
	}
	// Readable and searchable by others is fine: the socket is 0600 and
	// peers are checked.
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, ".baton"), 0o700)
	os.Chmod(filepath.Join(dir, ".baton"), 0o755)
	os.WriteFile(filepath.Join(dir, "config.hcl"), []byte(fakeProgram("app", "serve", "")), 0o644)
	s, err := New(Config{File: filepath.Join(dir, "config.hcl"), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx)
}

// A start that fails (here: its user vanished after the config was
// read) leaves no descriptor open, however often the restart policy
// retries it.
func TestStart_failedStartLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	pool := newSocketPool()
	cfg := testProgram(`user = "root"`)
	cfg.User = "no-such-user-of-baton"
	cfg.Dir = dir
	st := &starter{runDir: dir, outLog: hclog.NewNullLogger()}
	fds := func() int {
		entries, _ := os.ReadDir("/proc/self/fd")
		return len(entries)
	}
	before := fds()
	for n := 1; n <= 10; n++ {
		l, err := pool.acquire("app", cfg.Listeners)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.start(spawnSpec{program: "app", n: n, cfg: cfg, path: "/bin/true", lease: l, log: hclog.NewNullLogger(),
			post: func(event) {}, output: func(*generation, []byte) {}})
		if err == nil || !strings.Contains(err.Error(), "no-such-user-of-baton") {
			t.Fatalf("want the user's error, have %v", err)
		}
	}
	if after := fds(); after != before {
		t.Fatalf("10 failed starts: %d descriptors open, %d before", after, before)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left in the runtime directory: %v", entries)
	}
}

// A socket systemd passed as "http" is not shared by two programs that
// both have a listener "http": the second is refused with the names to
// give the sockets instead. "a.http" goes to program a only.
func TestSockets_inheritedNameIsNotShared(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pool := newSocketPool()
	pool.inherited["http"] = f
	http := []config.Listener{{Name: "http", Address: "127.0.0.1:0"}}
	a, err := pool.acquire("a", http)
	if err != nil {
		t.Fatal(err)
	}
	if a.sockets[0].file != f {
		t.Fatal("program a did not get the inherited socket")
	}
	if _, err := pool.acquire("b", http); err == nil || !strings.Contains(err.Error(), `name the sockets "a.http" and "b.http"`) {
		t.Fatalf("a second program on the same inherited socket: want refused, have %v", err)
	}
	a2, err := pool.acquire("a", http) // a reload of a
	if err != nil {
		t.Fatal(err)
	}
	a.release()
	a2.release()
	// Once a let it go, another program may have it.
	b, err := pool.acquire("b", http)
	if err != nil {
		t.Fatal(err)
	}
	b.release()
}

// Under systemd (Type=notify), READY=1 goes once every program has become
// ready or failed its first start: one program that cannot start does not
// hold baton, and the healthy programs, until TimeoutStartSec. STATUS=
// names the one that failed, and is updated once it serves.
func TestSystemd_readyDoesNotWaitForAFailedProgram(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := proctest.NewBuffer()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			fmt.Fprintf(msgs, "%s\n--\n", buf[:n])
		}
	}()
	t.Setenv("NOTIFY_SOCKET", sock)
	h := newHarness(t, fakeProgram("good", "serve", "")+fakeProgram("bad", "crash", `restart {
    backoff     = "1h"
    max_backoff = "1h"
  }`))
	line, ok := msgs.Wait("READY=1", 1, waitLong)
	if !ok {
		t.Fatalf("no READY=1; messages:\n%s\nlog:\n%s", msgs, h.log)
	}
	if !strings.Contains(line, "READY=1") {
		t.Fatal(line)
	}
	if _, ok := msgs.Wait("STATUS=serving: good gen 1; failed to start: bad (exit status 2 before it was ready)", 1, waitLong); !ok {
		t.Fatalf("STATUS does not name the failed program:\n%s", msgs)
	}
	h.write(fakeProgram("good", "serve", "") + fakeProgram("bad", "serve", ""))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Programs: []string{"bad"}, Reason: "fixed", Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := msgs.Wait("STATUS=serving: bad gen 2, good gen 1\n", 1, waitLong); !ok {
		t.Fatalf("STATUS after the fix:\n%s", msgs)
	}
	h.stop()
}
