package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/procfs"
)

// proc is a process the harness started, its output in a log file.
type proc struct {
	cmd  *exec.Cmd
	pid  int
	log  string
	done chan struct{}
	code int // exit status once done; -1 when a signal ended it
}

// startProc starts path in its own process group, so that a ^C in the
// terminal reaches only the harness, which stops what it started in order.
// The parent-death signal kills it if the harness dies first.
func startProc(path string, args []string, dir string, env []string, log string) (*proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", filepath.Base(path), err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, log: log, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the exit status. After timeout it kills
// the process group and says so.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (int, error) {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
		return p.code, nil
	case <-time.After(timeout):
		p.kill()
		return p.code, fmt.Errorf("%s did not exit within %v of %v; killed", filepath.Base(p.cmd.Path), timeout, sig)
	}
}

// kill ends the process group at once and reaps the process.
func (p *proc) kill() {
	if !p.exited() {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	<-p.done
}

// tail returns the last n lines of the process's output, to explain a
// failure.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("last lines of %s:\n  %s", p.log, strings.Join(lines, "\n  "))
}

// waitGone waits until none of pids is a process any more and returns
// when each went. The harness cannot wait(2) for baton's children; baton
// reaps them at once, so a pid is gone within a poll of its exit.
func waitGone(ctx context.Context, pids []int, timeout time.Duration) ([]time.Time, error) {
	ends := make([]time.Time, len(pids))
	deadline := time.Now().Add(timeout)
	for left := len(pids); ; {
		now := time.Now()
		for i, pid := range pids {
			if ends[i].IsZero() && syscall.Kill(pid, 0) == syscall.ESRCH {
				ends[i] = now
				left--
			}
		}
		if left == 0 {
			return ends, nil
		}
		if now.After(deadline) {
			return nil, fmt.Errorf("%d processes still run after %v", left, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond): // polling the kernel, not synchronising
		}
	}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux the kernel ABI allows.
const clockTick = 100

// cpuSeconds returns the user and system CPU time pid has used.
func cpuSeconds(pid int) (float64, error) {
	st, err := procfs.Read(pid)
	if err != nil {
		return 0, err
	}
	return float64(st.UTime+st.STime) / clockTick, nil
}

// rssBytes returns pid's resident set size.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// openFDs counts pid's open file descriptors.
func openFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// usageSampler follows a process's RSS and CPU time while a scenario runs.
type usageSampler struct {
	pid    int
	start  time.Time
	cpu0   float64
	stopCh chan struct{}
	done   chan struct{}
	maxRSS int64
}

func sampleUsage(pid int) *usageSampler {
	u := &usageSampler{pid: pid, start: time.Now(), stopCh: make(chan struct{}), done: make(chan struct{})}
	u.cpu0, _ = cpuSeconds(pid)
	u.maxRSS, _ = rssBytes(pid)
	go func() {
		defer close(u.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-u.stopCh:
				return
			case <-t.C:
				if n, err := rssBytes(pid); err == nil && n > u.maxRSS {
					u.maxRSS = n
				}
			}
		}
	}()
	return u
}

// usage is what baton used during a scenario.
type usage struct {
	RSSMiB     float64 `json:"rss_mib"`     // the largest resident set sampled (every 100 ms)
	CPUSeconds float64 `json:"cpu_s"`       // user + system
	CPUPercent float64 `json:"cpu_percent"` // of one core, over the scenario
	FDs        int     `json:"fds"`         // open at the end
	Goroutines int     `json:"goroutines"`  // at the end, from its metrics
}

func (u *usageSampler) finish() usage {
	close(u.stopCh)
	<-u.done
	cpu1, _ := cpuSeconds(u.pid)
	if n, err := rssBytes(u.pid); err == nil && n > u.maxRSS {
		u.maxRSS = n
	}
	el := time.Since(u.start).Seconds()
	out := usage{RSSMiB: mib(u.maxRSS), CPUSeconds: round(cpu1-u.cpu0, 2)}
	if el > 0 {
		out.CPUPercent = round((cpu1-u.cpu0)/el*100, 2)
	}
	return out
}

func mib(b int64) float64 { return round(float64(b)/(1<<20), 1) }

// cpuShare measures how much CPU others took while a scenario ran: the
// machine's busy time less that of the harness and every process under
// it. Reaped processes count through their parent's children times, so
// the sum stays right as processes come and go.
type cpuShare struct {
	machine0, total0, ours0 int64
}

func startCPUShare() cpuShare {
	var c cpuShare
	c.machine0, c.total0 = processTimes()
	c.ours0 = treeTicks(os.Getpid())
	return c
}

// delta returns the CPU time others used since the start, and the time
// all the CPUs had, in jiffies.
func (c cpuShare) delta() (others, total int64) {
	machine, all := processTimes()
	ours := treeTicks(os.Getpid())
	return max(0, (machine-c.machine0)-(ours-c.ours0)), all - c.total0
}

// othersPercent returns the share of all CPUs others used since the start.
func (c cpuShare) othersPercent() float64 {
	others, total := c.delta()
	if total <= 0 {
		return 0
	}
	return round(float64(others)/float64(total)*100, 1)
}

// processTimes returns the jiffies the CPUs spent in processes (user,
// nice, system) or stolen by the hypervisor, and the total. Interrupt
// time is left out: no process is charged for it.
func processTimes() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		if i >= 8 {
			break // guest time is already in user time
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		switch i {
		case 0, 1, 2, 7: // user, nice, system, steal
			busy += n
		}
	}
	return busy, total
}

// treeTicks sums the CPU time of root and of every process under it,
// with the times of the children they reaped.
func treeTicks(root int) int64 {
	all, err := procfs.All()
	if err != nil {
		return 0
	}
	parent := map[int]int{}
	for _, st := range all {
		parent[st.PID] = st.PPID
	}
	var sum int64
	for _, st := range all {
		for p := st.PID; p > 1; p = parent[p] {
			if p == root {
				sum += st.Ticks()
				break
			}
		}
	}
	return sum
}
