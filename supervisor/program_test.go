package supervisor

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
)

// The phase tests drive a program's handlers directly, with a fake
// environment: generations are records of the signals they got, timers
// fire when the test says so, and events are handled on the test's own
// goroutine. The real-process tests check the same behaviours end to end.

type fakeEnv struct {
	t      *testing.T
	p      *program
	log    *proctest.Buffer
	gens   []*generation // every generation started
	sigs   map[int][]syscall.Signal
	timers []*fakeTimer
	keys   map[string]string // Command[0] → generation key; "fail" in it: cannot start
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func newFakeProgram(t *testing.T, cfg *config.Program) *fakeEnv {
	t.Helper()
	fe := &fakeEnv{t: t, log: proctest.NewBuffer(), sigs: map[int][]syscall.Signal{}, keys: map[string]string{}}
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: fe.log})
	env := &programEnv{
		log: logger, outLog: logger, logFiles: &logFiles{},
		resolve: func(cfg *config.Program) (string, string, error) {
			key := fe.keys[cfg.Command[0]]
			if key == "" {
				key = cfg.Command[0]
			}
			if strings.Contains(key, "fail") {
				return "", "", errors.New("no such file")
			}
			return cfg.Command[0], key, nil
		},
		start: func(sp spawnSpec) (*generation, error) {
			n := sp.n
			g := &generation{n: n, cfg: sp.cfg, key: sp.key, pid: 1000 + n, started: time.Now(), lease: sp.lease,
				done: make(chan struct{}), log: logger,
				signal: func(sig syscall.Signal) error { fe.sigs[n] = append(fe.sigs[n], sig); return nil }}
			fe.gens = append(fe.gens, g)
			return g, nil
		},
		after: func(d time.Duration, f func()) func() bool {
			ft := &fakeTimer{d: d, f: f}
			fe.timers = append(fe.timers, ft)
			return func() bool { ft.stopped = true; return true }
		},
		jitter:     func() float64 { return 0 },
		observe:    func(Event) {},
		handedOver: func(string, time.Duration, []phaseTime) {},
		drained:    func(string, time.Duration) {},
		baked:      func(string, bool, time.Duration) {},
		bakeProbe: func(*generation, string, string, time.Duration, func(error)) func() {
			return func() {}
		},
		keep:       func(string, *generation, func(keptBinary)) {},
		monitor:    func(*generation, *config.Program, func(event)) func() { return func() {} },
		depChanged: func(string, depState) {},
	}
	fe.p = newProgram(env, cfg, nil, false)
	t.Cleanup(func() {
		close(fe.p.quit) // ends timer posts still on their way
		if strings.Contains(fe.log.String(), "illegal phase transition") {
			t.Errorf("log:\n%s", fe.log)
		}
	})
	return fe
}

func testProgram(extra string) *config.Program {
	f, diags := config.Parse([]byte(`program "app" {
  command = ["./v1"]
  listener "http" { address = "127.0.0.1:0" }
  `+extra+`
}`), "config.hcl", "/srv")
	if diags.HasErrors() {
		panic(diags.Error())
	}
	return f.Programs[0]
}

// gen returns generation n (1, 2, …).
func (fe *fakeEnv) gen(n int) *generation {
	fe.t.Helper()
	if n > len(fe.gens) {
		fe.t.Fatalf("generation %d was not started; %d were", n, len(fe.gens))
	}
	return fe.gens[n-1]
}

// fire fires the last armed timer that was not stopped and for which
// match is true, and handles its event.
func (fe *fakeEnv) fire(match func(*fakeTimer) bool) {
	fe.t.Helper()
	for i := len(fe.timers) - 1; i >= 0; i-- {
		if ft := fe.timers[i]; !ft.stopped && match(ft) {
			ft.stopped = true
			go ft.f()
			fe.p.handle(<-fe.p.events)
			return
		}
	}
	fe.t.Fatal("no such timer armed")
}

func after(d time.Duration) func(*fakeTimer) bool {
	return func(ft *fakeTimer) bool { return ft.d == d }
}

// request sends a handover request and returns its reply channel.
func (fe *fakeEnv) request(force bool, binary string) chan handoverResult {
	reply := make(chan handoverResult, 1)
	req := &request{reason: "test", force: force, replies: []chan handoverResult{reply}}
	if binary != "" {
		req.cfg = fe.p.cfg.WithBinary(binary)
	}
	fe.p.handle(evRequest{req})
	return reply
}

func (fe *fakeEnv) want(ph phase) {
	fe.t.Helper()
	if fe.p.phase != ph {
		fe.t.Fatalf("want phase %s, have %s; log:\n%s", ph, fe.p.phase, fe.log)
	}
}

func result(t *testing.T, c chan handoverResult) handoverResult {
	t.Helper()
	select {
	case r := <-c:
		return r
	default:
		t.Fatal("no result yet")
		return handoverResult{}
	}
}

func noResult(t *testing.T, c chan handoverResult) {
	t.Helper()
	select {
	case r := <-c:
		t.Fatalf("want no result yet, have %+v", r)
	default:
	}
}

func TestPhase_startReadyHandover(t *testing.T) {
	fe := newFakeProgram(t, testProgram(""))
	fe.p.begin(&request{reason: "start", force: true})
	fe.want(phaseStarting)
	fe.p.handle(evReady{fe.gen(1)})
	fe.want(phaseRunning)

	reply := fe.request(false, "./v2")
	fe.want(phaseRunning) // a handover under way: gen 1 still serves
	if fe.p.attempt == nil || fe.p.current != fe.gen(1) {
		t.Fatalf("want gen 2 starting while gen 1 serves")
	}
	fe.p.handle(evReady{fe.gen(2)})
	if r := result(t, reply); r.Err != nil || r.Gen != 2 || r.Binary != "./v2" {
		t.Fatalf("handover: %+v", r)
	}
	if sigs := fe.sigs[1]; len(sigs) != 1 || sigs[0] != syscall.SIGTERM {
		t.Fatalf("gen 1 got %v, want SIGTERM", sigs)
	}
	fe.p.handle(evExit{fe.gen(1), processStatus{}})
	fe.want(phaseRunning)
	if fe.p.stats.Handovers != 1 || fe.p.current != fe.gen(2) || fe.p.cfg.Command[0] != "./v2" {
		t.Fatalf("after the handover: %+v, cfg %v", fe.p.stats, fe.p.cfg.Command)
	}
}

func TestPhase_rollbackKeepsServing(t *testing.T) {
	fe := newFakeProgram(t, testProgram(""))
	fe.p.begin(&request{reason: "start", force: true})
	fe.p.handle(evReady{fe.gen(1)})
	reply := fe.request(true, "./v2")
	fe.p.handle(evExit{fe.gen(2), processStatus{Code: 2}})
	fe.want(phaseRunning)
	if r := result(t, reply); !errors.Is(r.Err, ErrRolledBack) || r.Gen != 1 {
		t.Fatalf("want a rollback to gen 1, have %+v", r)
	}
	// The same bytes again are known bad, unless forced.
	if r := result(t, fe.request(false, "./v2")); !errors.Is(r.Err, ErrKnownBad) {
		t.Fatalf("want known bad, have %+v", r)
	}
	if len(fe.gens) != 2 {
		t.Fatalf("a known bad binary was started")
	}
}

// A first start that fails is a failed start, not a rollback, and the
// restart policy takes over.
func TestPhase_startFailsThenBacksOff(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`restart { backoff = "3s" }`))
	reply := make(chan handoverResult, 1)
	fe.p.begin(&request{reason: "start", force: true, replies: []chan handoverResult{reply}})
	fe.p.handle(evExit{fe.gen(1), processStatus{Code: 1}})
	fe.want(phaseBackoff)
	if r := result(t, reply); !errors.Is(r.Err, ErrStartFailed) || errors.Is(r.Err, ErrRolledBack) {
		t.Fatalf("want ErrStartFailed, have %+v", r)
	}
	fe.fire(after(3 * time.Second))
	fe.want(phaseStarting)
	fe.p.handle(evReady{fe.gen(2)})
	fe.want(phaseRunning)
	if fe.p.stats.Restarts != 1 {
		t.Fatalf("restarts: want 1, have %d", fe.p.stats.Restarts)
	}
}

// A request that is not forced and would run what last ran leaves the
// backoff as it is: a saved config file does not end the restarts.
func TestPhase_backoffSurvivesAnUnchangedRequest(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`restart { backoff = "3s" }`))
	fe.p.begin(&request{reason: "start", force: true})
	fe.p.handle(evReady{fe.gen(1)})
	fe.p.handle(evExit{fe.gen(1), processStatus{Signal: "SIGKILL", Code: -1}})
	fe.want(phaseBackoff)
	if r := result(t, fe.request(false, "")); !errors.Is(r.Err, ErrUnchanged) {
		t.Fatalf("want unchanged, have %+v", r)
	}
	fe.want(phaseBackoff)
	fe.fire(after(3 * time.Second)) // still armed
	fe.want(phaseStarting)

	// A new binary does not wait for the backoff.
	fe.p.handle(evExit{fe.gen(2), processStatus{Code: 1}})
	fe.want(phaseBackoff)
	fe.request(false, "./v2")
	fe.want(phaseStarting)
	if len(fe.gens) != 3 || fe.gen(3).cfg.Command[0] != "./v2" {
		t.Fatalf("want gen 3 on ./v2")
	}
}

// A READY that comes after the stop signal, like the end of a ready delay,
// does not bring a stopping generation back, and its kill timer stays
// armed.
func TestPhase_readyAfterStopIsIgnored(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`stop { timeout = "7s" }`))
	fe.p.begin(&request{reason: "start", force: true})
	stopped := make(chan error, 1)
	fe.p.handle(evStop{stopped})
	fe.want(phaseStopping)
	fe.p.handle(evReady{fe.gen(1)})
	fe.want(phaseStopping)
	if fe.p.current != nil || fe.gen(1).ready {
		t.Fatal("a stopping generation became ready")
	}
	fe.fire(after(7 * time.Second))
	if sigs := fe.sigs[1]; len(sigs) != 2 || sigs[1] != syscall.SIGKILL {
		t.Fatalf("want SIGTERM then SIGKILL, have %v", sigs)
	}
	fe.p.handle(evExit{fe.gen(1), processStatus{Code: -1, Signal: "SIGKILL"}})
	fe.want(phaseStopped)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if fe.p.stats.Handovers != 0 {
		t.Fatal("the stopped generation counted as a handover")
	}
}

// Requests during a handover merge into one more, with the newest config;
// every requester gets its outcome.
func TestPhase_requestsMerge(t *testing.T) {
	fe := newFakeProgram(t, testProgram(""))
	fe.p.begin(&request{reason: "start", force: true})
	fe.p.handle(evReady{fe.gen(1)})
	r2 := fe.request(true, "./v2")
	r3 := fe.request(false, "./v3")
	r4 := fe.request(false, "./v4")
	noResult(t, r3)
	fe.p.handle(evReady{fe.gen(2)})
	if r := result(t, r2); r.Gen != 2 {
		t.Fatalf("first request: %+v", r)
	}
	if len(fe.gens) != 3 || fe.gen(3).cfg.Command[0] != "./v4" {
		t.Fatalf("want one more generation, on the newest binary")
	}
	fe.p.handle(evReady{fe.gen(3)})
	for _, c := range []chan handoverResult{r3, r4} {
		if r := result(t, c); r.Gen != 3 || r.Binary != "./v4" {
			t.Fatalf("merged request: %+v", r)
		}
	}
}

// Start: from exited it starts, while stopping it says so, and while a
// start is under way it waits for that start.
func TestPhase_start(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`restart { policy = "never" }`))
	fe.p.begin(&request{reason: "start", force: true})
	start := func() chan handoverResult {
		c := make(chan handoverResult, 1)
		fe.p.handle(evStart{&request{reason: "start requested", replies: []chan handoverResult{c}}})
		return c
	}
	waiting := start()
	noResult(t, waiting)
	fe.p.handle(evReady{fe.gen(1)})
	if r := result(t, waiting); r.Gen != 1 {
		t.Fatalf("Start during the first start: %+v", r)
	}
	fe.p.handle(evExit{fe.gen(1), processStatus{}})
	fe.want(phaseExited)
	if !strings.Contains(fe.p.exitReason, "never") {
		t.Fatalf("reason: %q", fe.p.exitReason)
	}
	start()
	fe.want(phaseStarting)
	fe.p.handle(evReady{fe.gen(2)})
	fe.p.handle(evStop{make(chan error, 1)})
	if r := result(t, start()); !errors.Is(r.Err, ErrStillStopping) {
		t.Fatalf("Start while stopping: %+v", r)
	}
}

// A program that cannot be resolved fails its start without a process.
func TestPhase_unresolvable(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`restart { policy = "never" }`))
	fe.keys["/srv/v1"] = "fail"
	reply := make(chan handoverResult, 1)
	fe.p.begin(&request{reason: "start", force: true, replies: []chan handoverResult{reply}})
	fe.want(phaseExited)
	if r := result(t, reply); !errors.Is(r.Err, ErrStartFailed) || !strings.Contains(r.Err.Error(), "no such file") {
		t.Fatalf("want a failed start, have %+v", r)
	}
	if len(fe.gens) != 0 {
		t.Fatal("a process was started")
	}
}

// Every phase's move is in the table.
func TestPhase_tableIsComplete(t *testing.T) {
	for ph := phaseBuilding; ph <= phaseShutdown; ph++ {
		if _, ok := transitions[ph]; !ok {
			t.Errorf("phase %d has no transitions", ph)
		}
		if states[ph] == "" {
			t.Errorf("phase %d has no state", ph)
		}
	}
	if phaseShutdown.allows(phaseRunning) || !phaseRunning.allows(phaseStarting) {
		t.Fatal("allows")
	}
}

// stats returns counters of n requests, errs of them 5xx, all fast.
func stats(n, errs uint64) *protocol.Stats {
	st := &protocol.Stats{Total: n, Errors: errs, Buckets: make([]uint64, len(protocol.StatsBuckets)+1)}
	st.Buckets[0] = n
	return st
}

// slow returns counters of n requests that each took d.
func slow(n uint64, d time.Duration) *protocol.Stats {
	st := stats(0, 0)
	st.Total, st.Buckets[protocol.Bucket(d)] = n, n
	return st
}

// mixed returns counters of fast requests that took 100 µs and slow
// ones that took d.
func mixed(fast, slowN uint64, d time.Duration) *protocol.Stats {
	st := stats(fast, 0)
	st.Total += slowN
	st.Buckets[protocol.Bucket(d)] += slowN
	return st
}

// The p99 verdict. A slow new version holds its clients' connections, so
// the old generation may answer fewer than 100 requests during the bake:
// its p99 is then taken over its life, and the slow version still fails.
// An old generation with too few requests even over its life gives no
// p99 verdict. A handful of slow requests is a stall of the machine, not
// of the version, even when they are more than 1%: 5 of 300 pass, 30 of
// 300 fail.
func TestPhase_bakeP99(t *testing.T) {
	for _, tc := range []struct {
		name     string
		oldLife  uint64          // requests the old one answered before the bake
		new      *protocol.Stats // what the new one answered
		reverted string          // the verdict, or "" for none
	}{
		{"slow, old one busy before", 1000, slow(200, 150*time.Millisecond), "p99 latency 250ms"},
		{"slow, old one idle", 20, slow(200, 150*time.Millisecond), ""},
		{"a handful slow", 1000, mixed(295, 5, 40*time.Millisecond), ""},
		{"a tenth slow", 1000, mixed(270, 30, 40*time.Millisecond), "p99 latency 50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := newFakeProgram(t, testProgram(`bake {
    duration = "3s"
    interval = "1s"
    max_p99  = "4x"
  }`))
			fe.p.begin(&request{reason: "start", force: true})
			fe.p.handle(evReady{fe.gen(1)})
			fe.p.handle(evNotify{fe.gen(1), protocol.Message{Stats: stats(tc.oldLife, 0)}})
			reply := fe.request(true, "./v2")
			fe.p.handle(evReady{fe.gen(2)})
			fe.want(phaseBaking)
			fe.p.handle(evNotify{fe.gen(1), protocol.Message{Stats: stats(tc.oldLife+10, 0)}})
			fe.p.handle(evNotify{fe.gen(2), protocol.Message{Stats: tc.new}})
			for range 3 {
				if len(reply) > 0 {
					break // judged before the end
				}
				fe.fire(after(time.Second))
			}
			r := result(t, reply)
			if reverted := errors.Is(r.Err, ErrReverted); reverted != (tc.reverted != "") {
				t.Fatalf("want reverted %v, have %+v", tc.reverted != "", r)
			}
			if tc.reverted != "" && !strings.Contains(r.Err.Error(), tc.reverted) {
				t.Fatalf("the verdict does not name the p99: want %q, have %v", tc.reverted, r.Err)
			}
		})
	}
}

// A ready generation of a program that bakes serves beside the old one,
// which is not told to stop until the verdict: passed, the old one gets
// its stop signal; failed (here, too many 5xx), the new one gets its stop
// signal, never SIGKILL first, and the old one serves on.
func TestPhase_bake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		errors uint64
		pass   bool
	}{{"passes", 0, true}, {"fails", 30, false}} {
		t.Run(tc.name, func(t *testing.T) {
			fe := newFakeProgram(t, testProgram(`bake {
    duration   = "10s"
    interval   = "1s"
    max_errors = "1%"
  }`))
			fe.p.begin(&request{reason: "start", force: true})
			fe.p.handle(evReady{fe.gen(1)})
			reply := fe.request(true, "./v2")
			fe.p.handle(evReady{fe.gen(2)})
			fe.want(phaseBaking)
			if len(fe.sigs[1]) != 0 || fe.p.current != fe.gen(1) {
				t.Fatal("the old generation was told to stop before the verdict")
			}
			noResult(t, reply)
			fe.p.handle(evNotify{fe.gen(2), protocol.Message{Stats: stats(0, 0)}})
			fe.p.handle(evNotify{fe.gen(2), protocol.Message{Stats: stats(1000, tc.errors)}})
			fe.fire(after(time.Second))
			if tc.pass {
				fe.want(phaseBaking)
				for range 9 {
					fe.fire(after(time.Second))
				}
				fe.want(phaseRunning)
				if r := result(t, reply); r.Err != nil || r.Gen != 2 || fe.p.current != fe.gen(2) {
					t.Fatalf("pass: %+v", r)
				}
				if sigs := fe.sigs[1]; len(sigs) != 1 || sigs[0] != syscall.SIGTERM {
					t.Fatalf("the old generation got %v, want SIGTERM", sigs)
				}
				return
			}
			fe.want(phaseRunning)
			if r := result(t, reply); !errors.Is(r.Err, ErrReverted) || r.Gen != 1 || fe.p.current != fe.gen(1) {
				t.Fatalf("fail: %+v", r)
			}
			if sigs := fe.sigs[2]; len(sigs) != 1 || sigs[0] != syscall.SIGTERM || len(fe.sigs[1]) != 0 {
				t.Fatalf("want SIGTERM to gen 2 only, have %v", fe.sigs)
			}
			if fe.p.stats.Reverts != 1 || fe.p.cfg.Command[0] == "./v2" {
				t.Fatalf("after the revert: %+v, config %v", fe.p.stats, fe.p.cfg.Command)
			}
			if r := result(t, fe.request(false, "./v2")); !errors.Is(r.Err, ErrKnownBad) {
				t.Fatalf("the reverted binary again: want known bad, have %+v", r)
			}
		})
	}
}
