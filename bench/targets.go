package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/harness"
)

// How long the harness waits for a process to start serving, and for one
// to drain and exit. Both are far above what a healthy run needs; they
// only keep a broken run from hanging.
const (
	startTimeout = 60 * time.Second
	exitTimeout  = 60 * time.Second
	// killTimeout bounds the stop of what a failed or interrupted run
	// leaves behind: SIGTERM first, so that baton stops its programs.
	killTimeout = 5 * time.Second
)

// handover is one restart or handover, as the harness saw it.
type handover struct {
	trigger time.Time     // SIGTERM (naive) or the reload request (baton)
	serving time.Time     // the new process answers (naive) or is ready (baton)
	end     time.Time     // both done: the old process exited and the new one serves
	readyIn time.Duration // baton: from the new generation's start to READY=1
	oldCode int           // the old process's exit status
}

// target is what a scenario loads: the example run directly, or under
// baton.
type target interface {
	addr() string
	// handover replaces the serving process by a new one.
	handover(ctx context.Context) (handover, error)
	// stop stops gracefully and returns the exit status.
	stop() (int, error)
	// kill ends whatever still runs, gracefully if it can be quick; it
	// is safe after stop.
	kill()
}

// ordersTarget runs examples/orders itself: direct never restarts it, and
// naive restarts it as most reloaders do, stop then start, with nothing
// held open in between.
type ordersTarget struct {
	e       *env
	dir, db string
	address string
	env     []string // the example's own settings
	cur     *proc
	n       int
	health  *http.Client
}

func startOrders(ctx context.Context, e *env, dir, db, addr string, env ...string) (*ordersTarget, error) {
	o := &ordersTarget{e: e, dir: dir, db: db, address: addr, env: env, health: newHealthClient()}
	p, err := o.launch(ctx)
	if err != nil {
		return nil, err
	}
	o.cur = p
	return o, nil
}

func (o *ordersTarget) addr() string { return o.address }

// launch starts a process that binds the address itself and waits until it
// answers.
func (o *ordersTarget) launch(ctx context.Context) (*proc, error) {
	o.n++
	p, err := startProc(o.e.orders, nil, o.dir, harness.ChildEnv(append([]string{"ORDERS_ADDR=" + o.address, "ORDERS_DB=" + o.db}, o.env...)...),
		filepath.Join(o.dir, fmt.Sprintf("orders.%d.log", o.n)))
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, o.health, o.address, p); err != nil {
		p.kill()
		return nil, fmt.Errorf("orders: %w\n%s", err, p.tail(20))
	}
	return p, nil
}

// handover is the naive restart: SIGTERM, wait for the exit, start a new
// process, which binds the address again.
func (o *ordersTarget) handover(ctx context.Context) (handover, error) {
	h := handover{trigger: time.Now()}
	code, err := o.cur.stop(syscall.SIGTERM, exitTimeout)
	if err != nil {
		return h, err
	}
	h.oldCode = code
	p, err := o.launch(ctx)
	if err != nil {
		return h, err
	}
	o.cur = p
	h.serving = time.Now()
	h.end = h.serving
	return h, nil
}

func (o *ordersTarget) stop() (int, error) { return o.cur.stop(syscall.SIGTERM, exitTimeout) }

func (o *ordersTarget) kill() {
	if o.cur != nil {
		o.cur.stop(syscall.SIGTERM, killTimeout)
	}
}

// waitHealthy polls GET /healthz, each time on a new connection, until p
// itself answers 200: while an old process drains, the answer could come
// from it.
func waitHealthy(ctx context.Context, c *http.Client, addr string, p *proc) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if p.exited() {
			return fmt.Errorf("exited with status %d before serving", p.code)
		}
		if pid, err := healthPID(ctx, c, addr); err == nil && pid == p.pid {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving on %s after %v", addr, startTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond): // polling a server, not synchronising
		}
	}
}

// newHealthClient returns a client that opens a connection per request,
// so that each answer comes from whichever process accepts it now.
func newHealthClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// healthPID returns the pid that answered GET /healthz with 200.
func healthPID(ctx context.Context, c *http.Client, addr string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		PID        int `json:"pid"`
		Generation int `json:"generation"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("healthz: %s", resp.Status)
	}
	return body.PID, nil
}

// batonProgram is one program block of the harness's config.
type batonProgram struct {
	name string
	db   string
	addr string // "127.0.0.1:0" for any free port
}

// batonTarget is a running baton and its control socket.
type batonTarget struct {
	e           *env
	p           *proc
	ctl         *control
	metricsAddr string
	programs    []string
	address     string // the first program's listener, as bound
}

// batonConfig writes the config: no watching, the handovers are the
// harness's alone; a metrics address for the goroutine count; the example
// without its journal, as in the other scenarios.
func batonConfig(orders, metricsAddr string, progs []batonProgram) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log {\n  level  = \"info\"\n  format = \"text\"\n}\nwatch { enabled = false }\nmetrics { address = %q }\n", metricsAddr)
	for _, p := range progs {
		fmt.Fprintf(&b, `
program %q {
  command  = [%q]
  env      = { ORDERS_DB = %q, ORDERS_JOURNAL = "off" }
  listener "http" { address = %q }
  ready { timeout = "60s" }
  stop { timeout = "60s" }
}
`, p.name, orders, p.db, p.addr)
	}
	return b.String()
}

// startBaton runs baton on a config of progs in dir and waits until every
// program runs.
func startBaton(ctx context.Context, e *env, dir string, progs []batonProgram) (*batonTarget, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, pr := range progs {
		names = append(names, pr.name)
	}
	return startBatonConfig(ctx, e, dir, batonConfig(e.orders, metricsAddr, progs), metricsAddr, names)
}

// startBatonConfig runs baton run on config, written to dir, and waits
// until the programs named run.
func startBatonConfig(ctx context.Context, e *env, dir, config, metricsAddr string, names []string) (*batonTarget, error) {
	file := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc(e.baton, []string{"run", "-config", file}, dir, harness.ChildEnv(), filepath.Join(dir, "baton.log"))
	if err != nil {
		return nil, err
	}
	b := &batonTarget{e: e, p: p, ctl: newControl(filepath.Join(dir, ".baton", "control.sock")), metricsAddr: metricsAddr, programs: names}
	sts, err := b.waitRunning(ctx, startTimeout)
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("baton: %w\n%s", err, p.tail(30))
	}
	if len(sts[0].Listeners) > 0 {
		b.address = sts[0].Listeners[0].Address
	}
	return b, nil
}

// waitRunning waits until every program serves its first generation.
func (b *batonTarget) waitRunning(ctx context.Context, timeout time.Duration) ([]programStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		if b.p.exited() {
			return nil, fmt.Errorf("exited with status %d", b.p.code)
		}
		sts, err := b.ctl.status(ctx)
		if err == nil && len(sts) == len(b.programs) {
			running := 0
			for _, st := range sts {
				if st.State == "running" && st.Generation > 0 {
					running++
				}
			}
			if running == len(sts) {
				return sts, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("programs not running after %v (last status error: %v)", timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling baton, not synchronising
		}
	}
}

func (b *batonTarget) addr() string { return b.address }

func (b *batonTarget) handover(ctx context.Context) (handover, error) {
	hs, err := b.handoverPrograms(ctx, b.programs[0])
	if err != nil {
		return handover{}, err
	}
	return hs[0], nil
}

// handoverPrograms asks baton to hand names over (all programs when none
// is named) and waits until every old generation has exited.
func (b *batonTarget) handoverPrograms(ctx context.Context, names ...string) ([]handover, error) {
	sts, err := b.ctl.status(ctx)
	if err != nil {
		return nil, err
	}
	old := map[string]programStatus{}
	for _, st := range sts {
		if len(names) == 0 || contains(names, st.Name) {
			old[st.Name] = st
		}
	}
	trigger := time.Now()
	results, err := b.ctl.reload(ctx, names...)
	serving := time.Now()
	if err != nil {
		return nil, err
	}
	if len(results) != len(old) {
		return nil, fmt.Errorf("reload: %d results for %d programs", len(results), len(old))
	}
	var out []handover
	for _, r := range results {
		prev := old[r.Program]
		if r.Error != "" || r.Generation <= prev.Generation {
			return nil, fmt.Errorf("reload %s: generation %d after %d: %s\n%s", r.Program, r.Generation, prev.Generation, r.Error, b.p.tail(30))
		}
		out = append(out, handover{trigger: trigger, serving: serving, readyIn: r.ReadyIn})
	}
	pids := make([]int, len(results))
	for i, r := range results {
		pids[i] = old[r.Program].PID
	}
	ends, err := waitGone(ctx, pids, exitTimeout)
	if err != nil {
		return nil, fmt.Errorf("old generations: %w", err)
	}
	for i := range out {
		out[i].end = ends[i]
	}
	// The exit statuses of the old generations, for the record.
	if sts, err = b.ctl.status(ctx); err == nil {
		for i, r := range results {
			for _, st := range sts {
				if st.Name == r.Program && st.LastExit != nil && st.LastExit.Generation == old[r.Program].Generation {
					out[i].oldCode = st.LastExit.Code
					if st.LastExit.Signal != "" {
						out[i].oldCode = -1
					}
				}
			}
		}
	}
	return out, nil
}

func (b *batonTarget) stop() (int, error) {
	return b.p.stop(syscall.SIGTERM, exitTimeout+10*time.Second)
}

func (b *batonTarget) kill() { b.p.stop(syscall.SIGTERM, killTimeout) }

// goroutines reads baton's go_goroutines from its metrics.
func (b *batonTarget) goroutines(ctx context.Context) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.metricsAddr+"/metrics", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no go_goroutines in baton's metrics")
}

// control is a client of baton's control API, as an outside tool sees it:
// the JSON of the status and reload replies, not baton's Go types.
type control struct {
	socket string
	http   *http.Client
}

// programStatus is the part of GET /v1/status the harness reads.
type programStatus struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int    `json:"generation"`
	PID        int    `json:"pid"`
	Handovers  int    `json:"handovers"`
	Reverts    int    `json:"reverts"`
	Draining   []int  `json:"draining_generations"`
	// Bake is the bake under way (verdict "baking") or the last one.
	Bake *struct {
		Generation int           `json:"generation"`
		PID        int           `json:"pid"`
		Verdict    string        `json:"verdict"`
		Reason     string        `json:"reason"`
		Duration   time.Duration `json:"duration_ns"`
		Requests   uint64        `json:"requests"`
		Errors     uint64        `json:"errors"`
	} `json:"bake"`
	LastExit *struct {
		Generation int    `json:"generation"`
		Code       int    `json:"code"`
		Signal     string `json:"signal"`
	} `json:"last_exit"`
	Listeners []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
	} `json:"listeners"`
}

// reloadResult is one result of POST /v1/reload.
type reloadResult struct {
	Program    string        `json:"program"`
	Generation int           `json:"generation"`
	ReadyIn    time.Duration `json:"ready_in_ns"`
	Error      string        `json:"error"`
}

func newControl(socket string) *control {
	// No keep-alive: a connection the harness keeps open would show up in
	// baton's descriptor count.
	return &control{socket: socket, http: &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (c *control) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://baton"+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("control %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control %s %s: %w", method, path, err)
	}
	return nil
}

func (c *control) status(ctx context.Context) ([]programStatus, error) {
	var reply struct {
		Programs []programStatus `json:"programs"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &reply)
	return reply.Programs, err
}

func (c *control) reload(ctx context.Context, names ...string) ([]reloadResult, error) {
	var reply struct {
		Results []reloadResult `json:"results"`
		Error   string         `json:"error"`
	}
	if names == nil {
		names = []string{}
	}
	if err := c.do(ctx, http.MethodPost, "/v1/reload", map[string][]string{"programs": names}, &reply); err != nil {
		return nil, err
	}
	if reply.Error != "" {
		return reply.Results, fmt.Errorf("reload: %s", reply.Error)
	}
	return reply.Results, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
