package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/loadgen"
)

// result is what one scenario measured.
type result struct {
	Scenario string           `json:"scenario"`
	Variant  string           `json:"variant"`
	Target   string           `json:"target"` // what it must show
	Requests int64            `json:"requests"`
	Failed   int64            `json:"failed"`
	FailedBy map[string]int64 `json:"failed_by,omitempty"`
	Acked    int              `json:"acked"`
	Lost     int              `json:"lost"`
	// Down counts UP → DOWN transitions of HAProxy's servers during the
	// load (chkdown, from the stats socket).
	Down int `json:"down_transitions"`
	// Retries and redispatches HAProxy made: 0 with retries 0 and no
	// redispatch, so that no failure was hidden.
	Retries int `json:"haproxy_retries"`
	// ServerErrors are HAProxy's connection and response errors (econ +
	// eresp) by server during the load: where the failures came from.
	ServerErrors map[string]int `json:"server_errors,omitempty"`
	// TimeToDown: from the loss of a host until HAProxy marked it DOWN.
	TimeToDown time.Duration `json:"time_to_down,omitempty"`
	Exits      []int         `json:"exit_statuses"` // of the processes stopped or lost, in order
	Notes      []string      `json:"notes,omitempty"`
	Elapsed    time.Duration `json:"elapsed"`
}

func (r *result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// scenario is the set-up shared by the scenarios: hosts, HAProxy and a
// load, and the bookkeeping that turns them into a result.
type scenario struct {
	f     *fleet
	dir   string
	hosts []*host // every host it created, in order; the removed ones too
	hap   *haproxy
	load  *loadgen.Load
	base  map[string]serverStat // HAProxy's counters when the load began
	res   *result
	acked []string // the orders the load saw acknowledged
	start time.Time
}

func (f *fleet) newScenario(name, variant, target string) (*scenario, error) {
	// The scenario's key (runScenario's name) keeps the paths short:
	// unix sockets live there, and HAProxy takes them unquoted.
	f.runs++
	dir := filepath.Join(f.work, fmt.Sprintf("%d-%s", f.runs, f.key))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f.logf("%s (%s)", name, variant)
	return &scenario{f: f, dir: dir, res: &result{Scenario: name, Variant: variant, Target: target}, start: time.Now()}, nil
}

// close stops everything the scenario started and removes its hosts.
func (s *scenario) close() {
	if s.load != nil {
		s.load.Stop()
	}
	if s.hap != nil {
		s.hap.close()
	}
	for _, h := range s.hosts {
		if h.proc != nil {
			h.proc.kill()
		}
		if h.ns != "" {
			s.f.net.removeHost(h.ns)
		}
	}
}

func (s *scenario) addHost(i int) (*host, error) {
	h, err := s.f.addHost(s.dir, i)
	if h != nil {
		s.hosts = append(s.hosts, h)
	}
	return h, err
}

// startHAProxy puts HAProxy in front of servers 1…n, checked on
// checkPath of checkPort, and waits until the live ones are UP and the
// others DOWN.
func (s *scenario) startHAProxy(n int, checkPath string, checkPort int, live int) error {
	var servers []hapServer
	for i := 1; i <= n; i++ {
		servers = append(servers, hapServer{Name: fmt.Sprintf("h%d", i), Addr: hostAddr(i), CheckPort: checkPort})
	}
	hap, err := startHAProxy(s.f.ctx, s.f.net.lb, filepath.Join(s.dir, "haproxy"), servers, checkPath, s.f.p.serverTimeout)
	if err != nil {
		return err
	}
	s.hap = hap
	for i := 1; i <= n; i++ {
		want := "UP"
		if i > live {
			want = "DOWN"
		}
		if _, err := hap.waitStatus(s.f.ctx, fmt.Sprintf("h%d", i), want, waitLong); err != nil {
			return err
		}
	}
	return nil
}

// startLoad begins the POST load through HAProxy and waits for a first
// step of acknowledged orders.
func (s *scenario) startLoad() error { return s.startLoadPaced(0) }

// startLoadPaced is startLoad with each client pausing pace after each
// request.
func (s *scenario) startLoadPaced(pace time.Duration) error {
	base, err := s.hap.stats()
	if err != nil {
		return err
	}
	s.base = base
	s.load = loadgen.Start(s.f.ctx, loadgen.Config{Addr: s.hap.frontend(), Clients: s.f.p.clients, Pace: pace})
	return s.f.step(s.load, "first orders")
}

// stopLoad ends the load and takes HAProxy's counters.
func (s *scenario) stopLoad() error {
	lr := s.load.Stop()
	s.load = nil
	st, err := s.hap.stats()
	if err != nil {
		return err
	}
	r := s.res
	r.Requests, r.Failed, r.FailedBy, r.Acked = lr.Requests, lr.FailedTotal(), lr.Failed, len(lr.Acked)
	for name, v := range st {
		b := s.base[name]
		r.Down += v.ChkDown - b.ChkDown
		r.Retries += v.Retries - b.Retries + v.Redisp - b.Redisp
		if e := v.Econ - b.Econ + v.Eresp - b.Eresp; e > 0 {
			if r.ServerErrors == nil {
				r.ServerErrors = map[string]int{}
			}
			r.ServerErrors[name] = e
		}
	}
	for kind, ex := range lr.Examples {
		r.note("%s: e.g. %s", kind, ex)
	}
	s.acked = lr.Acked
	return nil
}

// stopAll stops every host still running, gracefully and all at once,
// and records their exit statuses.
func (s *scenario) stopAll() {
	var running []*host
	for _, h := range s.hosts {
		if h.proc == nil {
			continue
		}
		select {
		case <-h.proc.done:
			continue
		default:
		}
		h.proc.cmd.Process.Signal(syscall.SIGTERM)
		running = append(running, h)
	}
	for _, h := range running {
		code, err := h.proc.exited(waitLong)
		if err != nil {
			s.res.note("%v", err)
		}
		s.res.Exits = append(s.res.Exits, code)
	}
}

// countLost counts the acknowledged orders in no host's database.
func (s *scenario) countLost() ([]string, error) {
	var dbs []string
	for _, h := range s.hosts {
		dbs = append(dbs, h.db())
	}
	m, err := missing(s.acked, dbs)
	if err != nil {
		return nil, err
	}
	s.res.Lost = len(m)
	return m, nil
}

func (s *scenario) finish() *result {
	s.res.Elapsed = time.Since(s.start)
	return s.res
}

// ---- The scenarios ----

// rollingDeploy: a new orders binary is copied to one host at a time;
// baton's binary watch hands each over. /readyz never fails, so HAProxy
// never marks a host down.
//
// With pace, each client pauses that long after each request: a light
// load, under which HAProxy keeps idle keep-alive connections to the old
// generation, which it closes at its drain timeout.
func (f *fleet) rollingDeploy(pace time.Duration) (*result, error) {
	variant := "baton hands over"
	if pace > 0 {
		variant += fmt.Sprintf(", light load (%v between requests)", pace)
	}
	if pace > 0 {
		// Fewer orders between two actions: the light load takes as
		// long for them.
		defer func(n int64) { f.p.step = n }(f.p.step)
		f.p.step = max(f.p.step/10, 20)
	}
	s, err := f.newScenario("rolling deploy", variant, "0 failed, 0 lost, 0 DOWN")
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.batonFleet(f.p.shutdownDelay); err != nil {
		return nil, err
	}
	if err := s.startLoadPaced(pace); err != nil {
		return nil, err
	}
	for _, h := range s.hosts {
		if err := copyBinary(f.orders, filepath.Join(h.dir, "bin", "orders"), "v2 "+h.name); err != nil {
			return nil, err
		}
		if _, err := h.proc.wait("handover: new generation ready", 1, waitLong); err != nil {
			return nil, err
		}
		if err := f.step(s.load, "after the deploy to "+h.name); err != nil {
			return nil, err
		}
	}
	// The old generations drain out under the load.
	for _, h := range s.hosts {
		if _, err := h.proc.wait("generation exited: program=orders gen=1 ", 1, waitLong); err != nil {
			return nil, err
		}
	}
	if err := f.step(s.load, "after the drains"); err != nil {
		return nil, err
	}
	if err := s.stopLoad(); err != nil {
		return nil, err
	}
	for _, h := range s.hosts {
		line, _ := h.proc.wait("generation exited: program=orders gen=1 ", 1, 0)
		if !strings.Contains(line, `status="exit status 0"`) {
			s.res.note("%s gen 1: %s", h.name, line)
		}
	}
	s.stopAll()
	if _, err := s.countLost(); err != nil {
		return nil, err
	}
	return s.finish(), nil
}

// batonFleet starts the usual fleet: three baton hosts behind HAProxy,
// which checks baton's /readyz.
func (s *scenario) batonFleet(shutdownDelay time.Duration) error {
	if err := s.batonHosts(3, shutdownDelay); err != nil {
		return err
	}
	return s.startHAProxy(3, "/readyz", 9100, 3)
}

func (s *scenario) batonHosts(n int, shutdownDelay time.Duration) error {
	for i := 1; i <= n; i++ {
		h, err := s.addHost(i)
		if err != nil {
			return err
		}
		if err := s.f.startBaton(h, shutdownDelay); err != nil {
			return err
		}
	}
	return nil
}

// rollingReplacement: baton on each host is stopped (SIGTERM) and started
// again, one host at a time, as a package upgrade of baton itself or a
// host reboot does. With a shutdown_delay above HAProxy's inter × fall,
// HAProxy has marked the host down before any program stops accepting.
func (f *fleet) rollingReplacement(shutdownDelay time.Duration) (*result, error) {
	target := "0 failed, 0 lost"
	if shutdownDelay < checkInter*checkFall {
		target = "none: shows why shutdown_delay exists"
	}
	s, err := f.newScenario("rolling replacement", "shutdown_delay "+shutdownDelay.String(), target)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.batonFleet(shutdownDelay); err != nil {
		return nil, err
	}
	if err := s.startLoad(); err != nil {
		return nil, err
	}
	for _, h := range s.hosts {
		code, err := f.stopHost(h)
		if err != nil {
			return nil, err
		}
		s.res.Exits = append(s.res.Exits, code)
		if err := f.startBaton(h, shutdownDelay); err != nil {
			return nil, err
		}
		if _, err := s.hap.waitStatus(f.ctx, h.name, "UP", waitLong); err != nil {
			return nil, err
		}
		if err := f.step(s.load, "after the replacement of "+h.name); err != nil {
			return nil, err
		}
	}
	if err := s.stopLoad(); err != nil {
		return nil, err
	}
	s.stopAll()
	if _, err := s.countLost(); err != nil {
		return nil, err
	}
	return s.finish(), nil
}

// orchestrator: the standalone orders server, replaced as Kubernetes or
// Nomad replace an instance: a new one starts on a fresh host and becomes
// UP, then the old one gets SIGTERM, while HAProxy still sends to it
// until its checks fail. With a lame duck above inter × fall the old one
// keeps accepting until then.
func (f *fleet) orchestrator(lameDuck time.Duration) (*result, error) {
	target := "0 failed, 0 lost"
	if lameDuck < checkInter*checkFall {
		target = "none: shows why the lame duck exists"
	}
	s, err := f.newScenario("orchestrator replacement", "standalone, lame duck "+lameDuck.String(), target)
	if err != nil {
		return nil, err
	}
	defer s.close()
	for i := 1; i <= 3; i++ {
		h, err := s.addHost(i)
		if err != nil {
			return nil, err
		}
		if err := f.startOrders(h, lameDuck); err != nil {
			return nil, err
		}
	}
	if err := s.startHAProxy(6, "/healthz", 8080, 3); err != nil {
		return nil, err
	}
	if err := s.startLoad(); err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		old := s.hosts[i-1]
		h, err := s.addHost(3 + i)
		if err != nil {
			return nil, err
		}
		if err := f.startOrders(h, lameDuck); err != nil {
			return nil, err
		}
		if _, err := s.hap.waitStatus(f.ctx, h.name, "UP", waitLong); err != nil {
			return nil, err
		}
		// The orchestrator signals the old instance and goes on: it
		// drains (lame duck, then its drain bounds) while the next
		// replacement starts.
		old.proc.cmd.Process.Signal(syscall.SIGTERM)
		if err := f.step(s.load, "after the replacement of "+old.name); err != nil {
			return nil, err
		}
	}
	for _, old := range s.hosts[:3] {
		code, err := old.proc.exited(waitLong)
		if err != nil {
			return nil, err
		}
		s.res.Exits = append(s.res.Exits, code)
	}
	if err := s.stopLoad(); err != nil {
		return nil, err
	}
	s.stopAll()
	if _, err := s.countLost(); err != nil {
		return nil, err
	}
	return s.finish(), nil
}

// hostLost: one host of three dies at once (every process of its
// namespace SIGKILLed) or loses its link. The requests in flight there
// fail, and those HAProxy sends there until its checks fail; the others
// do not. A killed host's acknowledged orders not yet in its database
// are in its journal, which it replays when it comes back.
func (f *fleet) hostLost(how string) (*result, error) {
	s, err := f.newScenario("host lost", how, "failures only on the lost host; 0 lost")
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.batonFleet(f.p.shutdownDelay); err != nil {
		return nil, err
	}
	if err := s.startLoad(); err != nil {
		return nil, err
	}
	lost := s.hosts[1]
	before := s.load.Failures()
	t0 := time.Now()
	switch how {
	case "SIGKILL":
		if err := killAll(lost.ns); err != nil {
			return nil, err
		}
		<-lost.proc.done
		s.res.Exits = append(s.res.Exits, lost.proc.code)
	case "link cut":
		if err := f.net.cutLink(f.ctx, lost.name, false); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown way to lose a host: %s", how)
	}
	down, err := s.hap.waitStatus(f.ctx, lost.name, "DOWN", waitLong)
	if err != nil {
		return nil, err
	}
	s.res.TimeToDown = down.Sub(t0)
	if err := f.step(s.load, "with "+lost.name+" down"); err != nil {
		return nil, err
	}
	if how == "link cut" {
		// A request in flight to it fails at HAProxy's timeout server.
		if err := f.step(s.load, "with "+lost.name+" down, past timeout server"); err != nil {
			return nil, err
		}
	}
	failedWhileDown := s.load.Failures() - before
	switch how {
	case "SIGKILL":
		if err := s.stopLoad(); err != nil {
			return nil, err
		}
		// The others stop gracefully: what they acknowledged must be in
		// their databases; what is still missing was acknowledged by the
		// lost host and waits in its journal.
		s.stopAll()
		m, err := s.countLost()
		if err != nil {
			return nil, err
		}
		inJournal := len(m)
		if err := f.startBaton(lost, f.p.shutdownDelay); err != nil {
			return nil, err
		}
		if _, err := lost.proc.wait("journal: replay of dead writers done", 1, waitLong); err != nil {
			return nil, err
		}
		code, err := f.stopHost(lost)
		if err != nil {
			return nil, err
		}
		s.res.Exits = append(s.res.Exits, code)
		replayed, err := loadgen.MissingOrders(lost.db(), m)
		if err != nil {
			return nil, err
		}
		if _, err := s.countLost(); err != nil {
			return nil, err
		}
		s.res.note("%d acknowledged orders were in no database while %s was down, all of them %s's (in its journal): written when it came back (%d of them still missing from its database)",
			inJournal, lost.name, lost.name, len(replayed))
	case "link cut":
		if err := f.net.cutLink(f.ctx, lost.name, true); err != nil {
			return nil, err
		}
		if _, err := s.hap.waitStatus(f.ctx, lost.name, "UP", waitLong); err != nil {
			return nil, err
		}
		if err := f.step(s.load, "with "+lost.name+" back"); err != nil {
			return nil, err
		}
		if err := s.stopLoad(); err != nil {
			return nil, err
		}
		s.stopAll()
		if _, err := s.countLost(); err != nil {
			return nil, err
		}
	}
	s.res.note("%d failed from the loss of %s until it was marked DOWN and %d orders more went through; %d in the rest of the run",
		failedWhileDown, lost.name, f.p.step, s.res.Failed-failedWhileDown)
	if how == "link cut" {
		s.res.note("a request in flight to the cut link fails at HAProxy's timeout server (%v)", f.p.serverTimeout)
	}
	return s.finish(), nil
}

// scenarioNames are the scenarios of a run, in order.
var scenarioNames = []string{"deploy", "deploy-light", "replace", "replace-nodelay", "orchestrator", "orchestrator-nolameduck", "lost-kill", "lost-link"}

// runScenario runs one scenario by name.
func (f *fleet) runScenario(name string) (*result, error) {
	f.key = name
	switch name {
	case "deploy":
		return f.rollingDeploy(0)
	case "deploy-light":
		return f.rollingDeploy(250 * time.Millisecond)
	case "replace":
		return f.rollingReplacement(f.p.shutdownDelay)
	case "replace-nodelay":
		return f.rollingReplacement(0)
	case "orchestrator":
		return f.orchestrator(f.p.lameDuck)
	case "orchestrator-nolameduck":
		return f.orchestrator(0)
	case "lost-kill":
		return f.hostLost("SIGKILL")
	case "lost-link":
		return f.hostLost("link cut")
	}
	return nil, errors.New("unknown scenario " + name)
}
