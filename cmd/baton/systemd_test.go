package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
)

// baton under systemd: socket-activated (here by systemd-socket-activate)
// it gives its programs the socket it was given, by name, instead of
// binding the configured address; with NOTIFY_SOCKET it says READY=1 once
// its programs are ready, RELOADING=1 then READY=1 around a SIGHUP reload,
// and STOPPING=1.
func TestSystemd_socketActivationAndNotify(t *testing.T) {
	tool := proctest.RequireTool(t, "systemd-socket-activate")
	dir := t.TempDir()
	// The configured address is taken: binding it would fail, so serving
	// proves the inherited socket was used.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(strings.Replace(fakeBlock("app", "serve", ""), "127.0.0.1:0", taken.Addr().String(), 1)), 0o644)

	notify := filepath.Join(dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	next := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			nc.SetReadDeadline(time.Now().Add(waitLong))
			n, err := nc.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if m := string(buf[:n]); strings.Contains(m, want) {
				return m
			}
		}
	}

	sock := filepath.Join(dir, "http.sock")
	argv, sel := proctest.SelfArgv("baton")
	args := []string{"-l", sock, "--fdname=http", "-E", sel, "-E", "NOTIFY_SOCKET=" + notify, "-E", "PATH=" + os.Getenv("PATH")}
	args = append(args, argv...)
	args = append(args, "run", "-config", cfg)
	p := proctest.Start(t, exec.Command(tool, args...))
	p.WaitOutput("Listening on "+sock, waitLong)

	// The first connection makes systemd-socket-activate exec baton.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if m := next("READY=1"); !strings.Contains(m, "STATUS=serving: app gen 1") {
		t.Fatalf("READY message: %q", m)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(b), "200 OK") {
		t.Fatalf("the first request: %q", b)
	}

	p.Signal(syscall.SIGHUP)
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING message: %q", m)
	}
	if m := next("READY=1"); !strings.Contains(m, "app gen 2") {
		t.Fatalf("READY after the reload: %q", m)
	}
	p.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	if code, _ := exitStatus(p.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit %d; output:\n%s", code, p.Output())
	}
}

// With user set, the program runs as that user: its uid, gid and groups
// are the user's, not root's.
func TestUser_privilegesDropped(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("dropping privileges needs root")
	}
	// The binary must be reachable by nobody: a copy in a public directory.
	dir, err := os.MkdirTemp("", "baton-user-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "baton.test")
	copyFile(t, self, bin, "")
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(`
program "app" {
  command = ["`+bin+`", "-test.run=^$"]
  env     = { BATON_TEST_CHILD = "serve" }
  user    = "nobody"
  listener "http" { address = "127.0.0.1:0" }
}
`), 0o644)
	cmd := exec.Command(bin, "-test.run=^$", "run", "-config", cfg)
	cmd.Env = append(os.Environ(), proctest.EnvChild+"=baton")
	baton := proctest.Start(t, cmd)
	baton.WaitOutput("ready: program=app gen=1", waitLong)
	addr := reAddr.FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))[1]
	resp := proctest.Get(t, "http://"+addr+"/whoami")
	if resp != "uid=65534 gid=65534 groups=[]" {
		t.Fatalf("the program runs as %q, want nobody without groups", resp)
	}
	baton.Signal(syscall.SIGTERM)
	if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit %d", code)
	}
}
