package supervisor

import (
	"context"
	"strings"
	"testing"

	"github.com/baton-run/baton/internal/loadgen"
)

// healthCase runs a program whose first generation falls ill, under GET
// load, and waits until a handover replaced it: no request fails, but at
// most one per client when the ill generation ignores SIGTERM and dies by
// a signal at its stop timeout (its keep-alive connections die with it).
func healthCase(t *testing.T, fake, env, extra string) *harness {
	t.Helper()
	h := newHarness(t, withEnv(fakeProgram("app", fake, extra+"\n  stop { timeout = \"1s\" }"), fake, env))
	h.waitEvent("app", "ready", 1)
	load := loadgen.Start(context.Background(), loadgen.Config{Addr: h.sup.Addr("app", "http"), Clients: 8, Get: true, Path: "/"})
	h.waitLog("replacing the serving generation by a handover: program=app gen=1", 1)
	h.waitEvent("app", "ready", 2)
	h.waitEvent("app", "exit", 1)
	load.WaitAcked(load.Acked()+200, waitLong)
	res := load.Stop()
	if strings.Contains(env, "FAKE_IGNORE_TERM") {
		for kind, n := range res.Failed {
			if n > 8 || !strings.HasPrefix(kind, "read") {
				t.Fatalf("%d requests failed (%s): more than the connections the dead generation held", n, kind)
			}
		}
	} else if res.FailedTotal() != 0 {
		t.Fatalf("%d of %d requests failed during the replacement: %v %v", res.FailedTotal(), res.Requests, res.Failed, res.Examples)
	}
	t.Logf("%d requests, %d failed", res.Requests, res.FailedTotal())
	return h
}

// A serving generation whose health check hangs is replaced by a
// handover, then stopped: it drains (its stuck checks end with their
// connections) and no request fails.
func TestLiveness_hungGenerationIsReplaced(t *testing.T) {
	h := healthCase(t, "sick", `FAKE_SICK_AFTER = "300ms", FAKE_SICK_GEN = "1"`, `liveness {
    http     = "/healthz"
    interval = "100ms"
    failures = 2
  }`)
	st := h.status("app")
	if st.LivenessFailures != 1 || st.Generation != 2 || !strings.Contains(h.log.String(), "2 probes of GET /healthz failed in a row") {
		t.Fatalf("want one liveness replacement, have %+v", st)
	}
	if st.LastExit == nil || st.LastExit.Generation != 1 || st.LastExit.Signal != "" {
		t.Fatalf("gen 1 should have drained: %+v", st.LastExit)
	}
	h.stop()
}

// A hung generation that does not drain either (it ignores SIGTERM) gets
// SIGQUIT at its stop timeout, which makes a Go program print every
// goroutine's stack into the log, and exit.
func TestLiveness_hungPastItsStopTimeoutGetsSIGQUIT(t *testing.T) {
	h := healthCase(t, "sick", `FAKE_SICK_AFTER = "300ms", FAKE_SICK_GEN = "1", FAKE_IGNORE_TERM = "1"`, `liveness {
    http     = "/healthz"
    interval = "100ms"
    failures = 2
  }`)
	h.waitLog("SIGQUIT, for its stacks, then SIGKILL: program=app gen=1", 1)
	h.waitLog("goroutine ", 1) // the Go runtime's dump, in the program's output
	if st := h.status("app"); st.LastExit == nil || st.LastExit.Generation != 1 || st.LastExit.Killed != "" {
		t.Fatalf("gen 1 should have ended by SIGQUIT, not SIGKILL: %+v", st.LastExit)
	}
	h.stop()
}

// systemd's watchdog: a generation that stops sending WATCHDOG=1 is
// replaced the same way.
func TestLiveness_watchdog(t *testing.T) {
	h := healthCase(t, "sick", `FAKE_SICK_AFTER = "300ms", FAKE_SICK_GEN = "1"`, `liveness { watchdog = "200ms" }`)
	if st := h.status("app"); st.LivenessFailures != 1 || !strings.Contains(h.log.String(), "no WATCHDOG=1 within 200ms") {
		t.Fatalf("want one watchdog replacement, have %+v", st)
	}
	h.stop()
}

// A generation whose memory grows past the limit is replaced by a
// handover; status reports the new one's memory.
func TestLimits_memoryReplaced(t *testing.T) {
	h := healthCase(t, "leak", `FAKE_LEAK_MB = "8", FAKE_LEAK_GEN = "1"`, `limits {
    memory   = "96MB"
    interval = "50ms"
  }`)
	st := h.status("app")
	if st.MemoryReplacements != 1 || st.Generation != 2 || !strings.Contains(h.log.String(), "above the limit of 96 MiB") {
		t.Fatalf("want one memory replacement, have %+v", st)
	}
	h.stop()
}
