package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/harness"
	"github.com/baton-run/baton/internal/loadgen"
)

// params are the sizes and timings of a run.
type params struct {
	clients       int           // keep-alive POST clients through HAProxy
	step          int64         // orders acknowledged between two actions
	stopTimeout   time.Duration // the orders program's stop timeout under baton
	shutdownDelay time.Duration // baton's shutdown_delay where it is on
	lameDuck      time.Duration // the standalone server's lame duck where it is on
	serverTimeout time.Duration // HAProxy's timeout server: what a cut link costs a request in flight
}

// Full is the command's default; short is the CI test's, whose delays
// keep 2 s of margin over HAProxy's inter × fall (1 s) on a busy CI
// machine.
var (
	fullParams  = params{clients: 32, step: 3000, stopTimeout: 30 * time.Second, shutdownDelay: 2 * time.Second, lameDuck: 2 * time.Second, serverTimeout: 5 * time.Second}
	shortParams = params{clients: 8, step: 150, stopTimeout: 5 * time.Second, shutdownDelay: 3 * time.Second, lameDuck: 3 * time.Second, serverTimeout: 3 * time.Second}
)

const waitLong = 90 * time.Second

// fleet is one run: the built binaries, the network, a work directory.
type fleet struct {
	ctx    context.Context
	p      params
	work   string
	baton  string // the baton binary
	orders string // the examples/orders binary
	net    *network
	log    io.Writer // progress
	key    string    // the scenario that runs, for its directory's name
	runs   int       // scenarios run, numbering their directories
}

// newFleet builds baton and examples/orders from the module the harness
// runs in, and creates the load balancer's namespace.
func newFleet(ctx context.Context, p params, log io.Writer) (*fleet, error) {
	if why := canCreateNamespaces(); why != "" {
		return nil, fmt.Errorf("%s", why)
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("haproxy is not installed (apt-get install haproxy)")
	}
	root, err := harness.ModuleRoot(ctx, "fleet")
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "baton-fleet-")
	if err != nil {
		return nil, err
	}
	f := &fleet{ctx: ctx, p: p, work: work, log: log,
		baton: filepath.Join(work, "bin", "baton"), orders: filepath.Join(work, "bin", "orders")}
	fmt.Fprintf(log, "fleet: building baton and examples/orders in %s\n", work)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(work, "bin")+string(filepath.Separator), "./cmd/baton", "./examples/orders")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(work)
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	if f.net, err = newNetwork(ctx); err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	return f, nil
}

// close removes the namespaces, and the work directory unless keep.
func (f *fleet) close(keep bool) {
	f.net.close()
	if keep {
		fmt.Fprintf(f.log, "fleet: kept %s (logs and databases)\n", f.work)
		return
	}
	os.RemoveAll(f.work)
}

func (f *fleet) logf(format string, args ...any) {
	fmt.Fprintf(f.log, "fleet: "+format+"\n", args...)
}

// host is one machine of the fleet: a namespace, an address, a directory
// with its binary, config, database and logs, and what runs there.
type host struct {
	name, ns, addr, dir string
	proc                *proc // baton, or the standalone orders server
	starts              int
}

func (h *host) db() string { return filepath.Join(h.dir, "orders.db") }

// addHost creates host number i of scenario dir.
func (f *fleet) addHost(dir string, i int) (*host, error) {
	h := &host{name: fmt.Sprintf("h%d", i), addr: hostAddr(i)}
	h.dir = filepath.Join(dir, h.name)
	if err := os.MkdirAll(filepath.Join(h.dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	ns, err := f.net.addHost(f.ctx, h.name, h.addr)
	if err != nil {
		return nil, err
	}
	h.ns = ns
	return h, copyBinary(f.orders, filepath.Join(h.dir, "bin", "orders"), "")
}

const batonConfig = `# baton on fleet host %[1]s
shutdown_delay = "%[2]s"
health { address = "%[1]s:9100" }

program "orders" {
  command = ["./bin/orders"]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "%[1]s:8080" }
  stop { timeout = "%[3]s" }
}
`

// startBaton runs baton with the orders program on h and waits until it
// serves.
func (f *fleet) startBaton(h *host, shutdownDelay time.Duration) error {
	cfg := filepath.Join(h.dir, "config.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(batonConfig, h.addr, shutdownDelay, f.p.stopTimeout)), 0o644); err != nil {
		return err
	}
	h.starts++
	p, err := startIn(h.ns, h.name+" baton", []string{f.baton, "run", "-config", cfg}, h.dir, harness.ChildEnv(),
		filepath.Join(h.dir, fmt.Sprintf("baton-%d.log", h.starts)))
	if err != nil {
		return err
	}
	h.proc = p
	_, err = p.wait("ready: program=orders gen=1 ", 1, waitLong)
	return err
}

// startOrders runs the orders server alone on h (as Kubernetes or Nomad
// would), with a lame duck, and waits until it serves.
func (f *fleet) startOrders(h *host, lameDuck time.Duration) error {
	h.starts++
	p, err := startIn(h.ns, h.name+" orders", []string{filepath.Join(h.dir, "bin", "orders")}, h.dir,
		harness.ChildEnv("ORDERS_ADDR="+h.addr+":8080", "ORDERS_DB="+h.db(), "BATON_LAME_DUCK="+lameDuck.String()),
		filepath.Join(h.dir, fmt.Sprintf("orders-%d.log", h.starts)))
	if err != nil {
		return err
	}
	h.proc = p
	_, err = p.wait("serving", 1, waitLong)
	return err
}

// stopHost stops what runs on h with SIGTERM and returns its exit status.
func (f *fleet) stopHost(h *host) (int, error) {
	return h.proc.stop(syscall.SIGTERM, waitLong)
}

// missing returns the acknowledged orders that are in none of dbs.
func missing(acked []string, dbs []string) ([]string, error) {
	left := acked
	for _, db := range dbs {
		if _, err := os.Stat(db); err != nil {
			continue
		}
		m, err := loadgen.MissingOrders(db, left)
		if err != nil {
			return nil, err
		}
		left = m
	}
	return left, nil
}

// step waits until the load has n more orders acknowledged: progress
// between two actions, under load.
func (f *fleet) step(load *loadgen.Load, what string) error {
	want := load.Acked() + f.p.step
	if !load.WaitAcked(want, waitLong) {
		return fmt.Errorf("%s: the load stalled at %d acknowledged (want %d), %d failed", what, load.Acked(), want, load.Failures())
	}
	return nil
}
