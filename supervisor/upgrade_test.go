package supervisor

import (
	"errors"
	"strings"
	"testing"

	"github.com/baton-run/baton/supervisor/control"
)

// An upgrade of baton waits for the handover under way: requests that
// come meanwhile are answered ErrUpgrading, the new generation still
// becomes ready and the old one is told to stop. Then the program is
// frozen: what happens to its generations (the old one's exit, its stop
// timer) waits, status answers, and its description names both
// generations. An upgrade that did not happen thaws it, and what waited
// is handled in order.
func TestPhase_freezeWaitsForTheHandoverThenThaws(t *testing.T) {
	fe := newFakeProgram(t, testProgram(""))
	fe.p.begin(&request{reason: "start", force: true})
	fe.p.handle(evReady{fe.gen(1)})
	handover := fe.request(true, "./v2")

	frozen := make(chan error, 1)
	fe.p.handle(evFreeze{frozen})
	if fe.p.upgrade == nil || fe.p.upgrade.stage != stageQuieting {
		t.Fatalf("want the program waiting for its handover, have %+v", fe.p.upgrade)
	}
	if r := result(t, fe.request(true, "./v3")); !errors.Is(r.Err, ErrUpgrading) || r.Gen != 1 {
		t.Fatalf("a request during the upgrade: want ErrUpgrading from gen 1, have %+v", r)
	}
	stop := make(chan error, 1)
	fe.p.handle(evStop{stop})
	if err := <-stop; !errors.Is(err, ErrUpgrading) {
		t.Fatalf("a stop during the upgrade: %v", err)
	}

	fe.p.handle(evReady{fe.gen(2)})
	if r := result(t, handover); r.Err != nil || r.Gen != 2 {
		t.Fatalf("the handover under way: %+v", r)
	}
	fe.p.handle(<-fe.p.events) // evPaused: nothing to park in a fake
	if err := <-frozen; err != nil {
		t.Fatalf("freeze: %v", err)
	}

	// Frozen: the old generation exits, its stop timer fires; both wait.
	fe.p.handle(evExit{fe.gen(1), processStatus{}})
	fe.fire(after(fe.p.cfg.Stop.Timeout))
	if fe.p.gens[1] == nil || fe.gen(1).killed != "" {
		t.Fatalf("a frozen program handled an event of its generations: gens %v, killed %q", fe.p.gens, fe.gen(1).killed)
	}
	reply := make(chan control.ProgramStatus, 1)
	fe.p.handle(evStatus{reply})
	if st := <-reply; st.Generation != 2 || st.Handovers != 1 || len(st.Draining) != 1 {
		t.Fatalf("status while frozen: %+v", st)
	}

	snap := make(chan snapshotResult, 1)
	fe.p.handle(evSnapshot{pass: newFDPass(), sources: newSourceTable(), reply: snap})
	r := <-snap
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := r.st
	if st.Phase != "running" || st.Current != 2 || len(st.Gens) != 2 || st.Stats.Handovers != 1 || st.Config.Binary != "./v2" {
		t.Fatalf("description: %+v", st)
	}
	if g1 := st.Gens[0]; g1.N != 1 || g1.StopAt.IsZero() || g1.DeadlineIn == nil || g1.During != "stop" {
		t.Fatalf("the old generation's description: %+v", g1)
	}

	fe.p.handle(evThaw{})
	if fe.p.upgrade != nil || fe.p.gens[1] != nil || fe.p.stats.LastExit == nil || fe.p.stats.LastExit.Generation != 1 {
		t.Fatalf("after the thaw, want gen 1's exit handled: gens %v, last exit %+v", fe.p.gens, fe.p.stats.LastExit)
	}
	if fe.gen(1).killed != "" {
		t.Fatalf("the stop timer of a generation that exited killed it: %q", fe.gen(1).killed)
	}
	fe.want(phaseRunning)
}

// A program that bakes refuses the upgrade at once, and says how to go
// on: the bake's verdict may be minutes away.
func TestPhase_freezeRefusedWhileBaking(t *testing.T) {
	fe := newFakeProgram(t, testProgram(`bake { duration = "5m" }`))
	fe.p.begin(&request{reason: "start", force: true})
	fe.p.handle(evReady{fe.gen(1)})
	fe.request(true, "./v2")
	fe.p.handle(evReady{fe.gen(2)})
	fe.want(phaseBaking)
	frozen := make(chan error, 1)
	fe.p.handle(evFreeze{frozen})
	if err := <-frozen; err == nil || !strings.Contains(err.Error(), "is baking gen 2") || !strings.Contains(err.Error(), "promote or revert") {
		t.Fatalf("want the upgrade refused while baking, have %v", err)
	}
	if fe.p.upgrade != nil {
		t.Fatal("a refused freeze left the program frozen")
	}
	fe.p.handle(evThaw{}) // the supervisor thaws every program: harmless
	fe.want(phaseBaking)
}
