package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the harness started, in a namespace, with its output
// kept in memory (to wait for lines) and in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	pid  int
	out  *lines
	done chan struct{}
	code int // exit status once done; -1 when a signal ended it
}

// startIn starts argv inside network namespace ns (ip netns exec, which
// execs in place: the pid is the program's), in its own process group,
// with the parent-death signal set so that it dies with the harness.
func startIn(ns, name string, argv []string, dir string, env []string, logPath string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	out := newLines(f)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pid: cmd.Process.Pid, out: out, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		out.close()
		f.Close()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	return p, nil
}

// wait waits up to timeout for a line holding substr to appear n times
// in the output, and returns the last such line.
func (p *proc) wait(substr string, n int, timeout time.Duration) (string, error) {
	line, ok := p.out.wait(substr, n, timeout)
	if !ok {
		return "", fmt.Errorf("%s: waited %v for %q (×%d); %s", p.name, timeout, substr, n, p.tail(15))
	}
	return line, nil
}

// stop sends sig and waits for the exit status; after timeout it kills
// the process group.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.code, nil
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.code, nil
	case <-time.After(timeout):
		p.kill()
		return p.code, fmt.Errorf("%s did not exit within %v of %v; killed", p.name, timeout, sig)
	}
}

// exited waits up to timeout for the process to exit by itself (a
// second signal would change what it does, as it ends a lame duck) and
// returns its exit status; after timeout it kills the process group.
func (p *proc) exited(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.code, nil
	case <-time.After(timeout):
		p.kill()
		return p.code, fmt.Errorf("%s did not exit within %v; killed", p.name, timeout)
	}
}

// kill ends the process group at once and reaps the process.
func (p *proc) kill() {
	syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

func (p *proc) tail(n int) string {
	ls := strings.Split(strings.TrimRight(p.out.String(), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return fmt.Sprintf("last lines of %s:\n  %s", p.name, strings.Join(ls, "\n  "))
}

// lines is an output sink that keeps everything written, passes it on to
// a file, and wakes those waiting for a line.
type lines struct {
	mu     sync.Mutex
	b      strings.Builder
	w      io.Writer
	closed bool
	change chan struct{}
}

func newLines(w io.Writer) *lines { return &lines{w: w, change: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.w.Write(p)
	close(l.change)
	l.change = make(chan struct{})
	return len(p), nil
}

func (l *lines) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	close(l.change)
	l.change = make(chan struct{})
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lines) count(substr string) int {
	return strings.Count(l.String(), substr)
}

func (l *lines) wait(substr string, n int, timeout time.Duration) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		s, closed, change := l.b.String(), l.closed, l.change
		l.mu.Unlock()
		if strings.Count(s, substr) >= n {
			i := strings.LastIndex(s, substr)
			start := strings.LastIndexByte(s[:i], '\n') + 1
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				return s[start:], true
			}
			return s[start : i+end], true
		}
		if closed {
			return "", false
		}
		select {
		case <-change:
		case <-deadline.C:
			return "", false
		}
	}
}

// copyBinary copies src to dst, appending extra (a different binary that
// runs the same: a "new version"), through a temporary file renamed over
// dst, as deploy tools do.
func copyBinary(src, dst, extra string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".new")
	if err := os.WriteFile(tmp, append(b, extra...), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
