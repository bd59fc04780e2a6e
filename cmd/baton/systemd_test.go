package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
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
// and STOPPING=1; with WATCHDOG_USEC it pings the watchdog.
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
	args := []string{"-l", sock, "--fdname=http", "-E", sel, "-E", "NOTIFY_SOCKET=" + notify, "-E", "WATCHDOG_USEC=200000", "-E", "PATH=" + os.Getenv("PATH")}
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
	next("WATCHDOG=1")

	p.Signal(syscall.SIGHUP)
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING message: %q", m)
	}
	if m := next("READY=1"); !strings.Contains(m, "app gen 2") {
		t.Fatalf("READY after the reload: %q", m)
	}
	next("WATCHDOG=1")
	p.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	if code, _ := exitStatus(p.Wait(waitLong)); code != 0 {
		t.Fatalf("baton exit %d; output:\n%s", code, p.Output())
	}
}

// With user set, the program runs as that user: its uid, gid and
// supplementary groups are the user's, not root's, and its notify socket
// is that user's alone, whether baton starts it directly (it links the
// child package) or through the /bin/sh exec shim. A program started
// through baton's own binary as the shim needs that binary executable by
// the user: baton check says so when it is not.
//
// It runs as root (CI does, with BATON_REQUIRE_ROOT=1: then it fails
// instead of skipping), with a user and groups of its own.
func TestUser_privilegesDropped(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("BATON_REQUIRE_ROOT") != "" {
			t.Fatal("BATON_REQUIRE_ROOT is set, and this test does not run as root")
		}
		t.Skip("dropping privileges needs root")
	}
	user := newTestUser(t)

	pub, err := os.MkdirTemp("", "baton-user-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(pub, "baton.test") // the test binary, where the user can run it
	copyFile(t, self, bin, "")
	foreign := filepath.Join(pub, "foreign.test") // a program without baton's protocol
	proctest.ForeignCopy(t, foreign)
	cfg := filepath.Join(pub, "config.hcl")
	program := foreign
	writeCfg := func(env string) {
		os.WriteFile(cfg, []byte(`
program "app" {
  command = ["`+program+`", "-test.run=^$"]
  env     = { BATON_TEST_CHILD = "serve" `+env+` }
  user    = "`+user.name+`"
  listener "http" { address = "127.0.0.1:0" }
}
`), 0o644)
	}
	check := func(cfg string) (string, error) {
		cmd := exec.Command(bin, "-test.run=^$", "check", "-config", cfg)
		cmd.Env = append(os.Environ(), proctest.EnvChild+"=baton")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// A variable whose name a shell would drop makes baton start a
	// foreign program through its own binary, which the user must be able
	// to run: this test's own binary lives in a private directory (the go
	// test cache is 0700), its copy in a public one.
	writeCfg(`, "my.var" = "1"`)
	code, _, errs := ctl(t, "check", "-config", cfg)
	if code != exitError || !strings.Contains(errs, "cannot execute baton's own binary") || !strings.Contains(errs, "/usr/local/bin") {
		t.Fatalf("check with a baton binary the user cannot run: want exit 1 and the fix, have %d %q", code, errs)
	}
	if out, err := check(cfg); err != nil {
		t.Fatalf("check from the public copy: %v\n%s", err, out)
	}
	// A program that links the child package starts without a shim.
	program = bin
	writeCfg(`, "my.var" = "1"`)
	if code, _, errs := ctl(t, "check", "-config", cfg); code != 0 {
		t.Fatalf("check of a program started directly: %d %q", code, errs)
	}
	program = foreign
	// A program directory the user cannot enter (a config file in a
	// private directory, the default dir) is reported too.
	writeCfg("")
	private := filepath.Join(t.TempDir(), "config.hcl")
	b, _ := os.ReadFile(cfg)
	os.WriteFile(private, b, 0o644)
	if out, err := check(private); err == nil || !strings.Contains(out, "cannot enter the program's directory") {
		t.Fatalf("check with a private program directory: %v %q", err, out)
	}
	if code, _, errs := ctl(t, "check", "-config", cfg); code != 0 {
		t.Fatalf("check through the shell shim: %d %q", code, errs)
	}

	for _, tc := range []struct{ program, via string }{{foreign, "sh"}, {bin, "direct"}} {
		program = tc.program
		writeCfg("")
		cmd := exec.Command(bin, "-test.run=^$", "run", "-config", cfg)
		cmd.Env = append(os.Environ(), proctest.EnvChild+"=baton")
		baton := proctest.Start(t, cmd)
		baton.WaitOutput("via="+tc.via, waitLong)
		baton.WaitOutput("ready: program=app gen=1", waitLong)
		addr := reAddr.FindStringSubmatch(baton.WaitOutput("serving: ", waitLong))[1]
		want := fmt.Sprintf("uid=%d gid=%d groups=[%d] notify=%d:%d/0600", user.uid, user.gid, user.extraGid, user.uid, user.gid)
		if resp := proctest.Get(t, "http://"+addr+"/whoami"); resp != want {
			t.Fatalf("via %s: the program runs as %q, want %q", tc.via, resp, want)
		}
		baton.Signal(syscall.SIGTERM)
		if code, _ := exitStatus(baton.Wait(waitLong)); code != 0 {
			t.Fatalf("via %s: baton exit %d", tc.via, code)
		}
	}
}

type testUser struct {
	name               string
	uid, gid, extraGid int
}

// newTestUser creates a system user with a primary group and one
// supplementary group, removed at the end of the test.
func newTestUser(t *testing.T) testUser {
	t.Helper()
	for _, tool := range []string{"useradd", "groupadd", "userdel", "groupdel"} {
		proctest.RequireTool(t, tool)
	}
	name := fmt.Sprintf("bt%d", os.Getpid()%100000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("groupadd", "--system", name+"x")
	t.Cleanup(func() { exec.Command("groupdel", name+"x").Run() })
	run("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "--groups", name+"x", name)
	t.Cleanup(func() { exec.Command("userdel", name).Run(); exec.Command("groupdel", name).Run() })
	u, err := osuser.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := osuser.LookupGroup(name + "x")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	extra, _ := strconv.Atoi(g.Gid)
	return testUser{name: name, uid: uid, gid: gid, extraGid: extra}
}
