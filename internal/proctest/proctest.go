// Package proctest runs real processes in tests: the test binary
// re-executed as a fake child (as os/exec's own tests do), with its output
// captured and waited on line by line, never by sleeping.
package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"golang.org/x/sys/unix"
)

// EnvChild names the fake child the test binary should become.
const EnvChild = "BATON_TEST_CHILD"

// Main is called from TestMain: when the binary was started as a fake
// child it runs that child and exits with its status; otherwise it runs
// the tests.
func Main(m *testing.M, children map[string]func() int) {
	RunChild(children)
	os.Exit(m.Run())
}

// RunChild runs the fake child the binary was started as, if any, and
// exits with its status; otherwise it returns.
func RunChild(children map[string]func() int) {
	name := os.Getenv(EnvChild)
	if name == "" {
		// Under the race detector every process sleeps a second at exit
		// (GORACE atexit_sleep_ms); the fake children need not.
		if os.Getenv("GORACE") == "" {
			os.Setenv("GORACE", "atexit_sleep_ms=0")
		}
		return
	}
	f, ok := children[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "proctest: no fake child %q\n", name)
		os.Exit(2)
	}
	os.Unsetenv(EnvChild)
	os.Exit(f())
}

// Self returns a command that re-executes the test binary as the fake
// child name, with env added to the test's environment.
func Self(name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), EnvChild+"="+name), env...)
	return cmd
}

// SelfArgv returns the argv that re-executes the test binary (for
// supervisors that take a command line) and the environment entry that
// selects the fake child name.
func SelfArgv(name string) (argv []string, env string) {
	return []string{os.Args[0], "-test.run=^$"}, EnvChild + "=" + name
}

// Proc is a started process whose combined output is collected.
type Proc struct {
	Cmd  *exec.Cmd // started
	Out  *Buffer   // stdout and stderr
	t    testing.TB
	done chan struct{}
	err  error
}

// Start starts cmd with stdout and stderr captured, in its own process
// group, and makes sure at the end of the test that it was reaped: a
// process still running then is killed with its group.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	pw.Close()
	p := &Proc{Cmd: cmd, Out: NewBuffer(), t: t, done: make(chan struct{})}
	go func() {
		io.Copy(p.Out, pr)
		pr.Close()
		p.Out.Close()
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			t.Logf("killed %s (pid %d) at the end of the test; output:\n%s", cmd.Path, cmd.Process.Pid, p.Output())
		}
		// Anything left in its process group dies with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	return p
}

// Output returns everything the process wrote so far.
func (p *Proc) Output() string { return p.Out.String() }

// WaitOutput waits until the output contains substr and returns the line
// holding it. It fails the test after timeout or when the output ends.
func (p *Proc) WaitOutput(substr string, timeout time.Duration) string {
	p.t.Helper()
	line, ok := p.Out.Wait(substr, 1, timeout)
	if !ok {
		p.t.Fatalf("waited %v for %q in the output of %s; output:\n%s", timeout, substr, p.Cmd.Path, p.Output())
	}
	return line
}

// Wait waits up to timeout for the process to exit and returns its state;
// it fails the test on timeout.
func (p *Proc) Wait(timeout time.Duration) *os.ProcessState {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s (pid %d) did not exit within %v; output:\n%s", p.Cmd.Path, p.Cmd.Process.Pid, timeout, p.Output())
	}
	// Let the reader see the end of the output.
	p.Out.WaitClosed(5 * time.Second)
	return p.Cmd.ProcessState
}

// Done is closed when the process has exited and was reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to pid %d: %v", sig, p.Cmd.Process.Pid, err)
	}
}

// ExitCode returns the exit status of a process that exited, or -1 with
// the signal when it was killed.
func ExitCode(st *os.ProcessState) (int, string) {
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal().String()
	}
	return ws.ExitStatus(), ""
}

// RequireTool returns the path of a tool a test runs. When it is not
// installed the test is skipped, unless BATON_REQUIRE_TOOLS is set (CI
// sets it), where a missing tool fails the test.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BATON_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s is required (BATON_REQUIRE_TOOLS is set) but not installed", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return path
}

// WaitGone waits up to timeout for process pid to end, on a pidfd (any
// process, not only a child), and reports whether it did.
func WaitGone(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, syscall.ESRCH)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == nil && n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return false
		}
	}
}

// Get GETs url on a fresh connection (no keep-alive: an idle connection
// left in a pool would hold a draining generation until its timeout) and
// returns the body; it fails the test on an error.
func Get(t testing.TB, url string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ServedBy asks a fake child (fakes "serve") at addr which pid answers.
func ServedBy(t testing.TB, addr string) int {
	t.Helper()
	b := Get(t, "http://"+addr+"/")
	pid, err := strconv.Atoi(b)
	if err != nil {
		t.Fatalf("GET http://%s/: %q", addr, b)
	}
	return pid
}

// Replace writes content to a temporary file and renames it over path, as
// deploy tools and editors do.
func Replace(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory and
// returns it, unmounted at the end of the test: a small disk that a test
// can fill for real. Mounting needs CAP_SYS_ADMIN; without it the test is
// skipped.
func Tmpfs(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): a full disk needs root", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill writes a file into dir until the file system is full, and returns
// its path: removing it frees the space again.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	path := dir + "/filler"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: want ENOSPC, have %v", dir, err)
			}
			break
		}
	}
	// The last partial block too: the file system has no byte left.
	for {
		if _, err := f.Write(block[:1]); err != nil {
			break
		}
	}
	return path
}

// ForeignCopy writes a copy of the test binary to path, mode 0755, in
// which BATON_LISTEN_PPID is spelt otherwise: baton takes it for a
// program that does not link its protocol and starts it through an exec
// shim, as it would a program in another language.
func ForeignCopy(t testing.TB, path string) {
	t.Helper()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	foreign := bytes.ReplaceAll(self, []byte(protocol.EnvListenParent), []byte("BATON_LISTEN_XXXX"))
	if err := os.WriteFile(path, foreign, 0o755); err != nil {
		t.Fatal(err)
	}
}

// FreeAddr returns a loopback TCP address nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
