package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/baton-run/baton/internal/harness"
)

// env is one run of the harness: a work directory and the binaries built
// into it.
type env struct {
	root     string // the repository: the main module's directory
	work     string // scenario directories, logs and databases
	baton    string // the baton binary
	orders   string // the examples/orders binary
	progress io.Writer
	keep     bool
}

// setup builds baton and examples/orders from the module that holds the
// working directory into a fresh work directory.
func setup(ctx context.Context, progress io.Writer, keep bool) (*env, error) {
	root, err := harness.ModuleRoot(ctx, "bench")
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "baton-bench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	e := &env{root: root, work: work, progress: progress, keep: keep,
		baton: filepath.Join(work, "bin", "baton"), orders: filepath.Join(work, "bin", "orders")}
	fmt.Fprintf(progress, "bench: building baton and examples/orders in %s\n", work)
	start := time.Now()
	// One go build for both: a directory as -o takes one binary per main
	// package, named after it.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(work, "bin")+string(filepath.Separator), "./cmd/baton", "./examples/orders")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		e.close()
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	fmt.Fprintf(progress, "bench: built in %v\n", time.Since(start).Round(100*time.Millisecond))
	return e, nil
}

// close removes the work directory, unless it is to be kept.
func (e *env) close() {
	if e.keep {
		fmt.Fprintf(e.progress, "bench: kept %s (logs and databases)\n", e.work)
		return
	}
	os.RemoveAll(e.work)
}

// dir creates the directory of one scenario or mode.
func (e *env) dir(name string) (string, error) {
	d := filepath.Join(e.work, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return d, nil
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "bench: "+format+"\n", args...)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. The naive restart needs a fixed address, since its new process binds
// again; the other scenarios use one too, to compare like with like.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// machine describes where the figures were taken.
type machine struct {
	Date      string  `json:"date"`
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model,omitempty"` // from /proc/cpuinfo
	MemoryGiB float64 `json:"memory_gib"`
	GoVersion string  `json:"go"`
	OS        string  `json:"os"`
	LoadAvg   string  `json:"loadavg"` // 1, 5, 15 minutes, when the run started
	// Busy is the share of the CPUs others used during one second before
	// the run: the harness needs them all, so anything above a few
	// percent makes the figures those of a busy machine.
	Busy float64 `json:"busy_percent"`
}

func thisMachine() machine {
	m := machine{Busy: busyPercent(time.Second), Date: time.Now().Format("2006-01-02 15:04 MST"), CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadAvg: harness.LoadAvg(), CPUModel: cpuModel()}
	if kb := meminfo("MemTotal"); kb > 0 {
		m.MemoryGiB = float64(kb) / (1 << 20)
	}
	return m
}

// cpuModel returns the processor's name, as /proc/cpuinfo gives it.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func meminfo(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// busyPercent measures how busy the CPUs are over d: the harness idles
// meanwhile, so what it sees is someone else's load.
func busyPercent(d time.Duration) float64 {
	busy0, total0 := processTimes()
	time.Sleep(d) // a measurement period, not synchronisation
	busy1, total1 := processTimes()
	if total1 <= total0 {
		return 0
	}
	return round(float64(busy1-busy0)/float64(total1-total0)*100, 1)
}
