package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The fleet's scenarios, short: three hosts in network namespaces behind
// a real HAProxy (retries 0, no redispatch), keep-alive POST load through
// it. Each scenario asserts what it promises; the ones that show why a
// setting exists (no shutdown_delay, no lame duck) assert only that no
// acknowledged order is lost, and log their failures. It needs root,
// iproute2 and haproxy: without namespaces it skips; without haproxy it
// skips too, unless BATON_REQUIRE_TOOLS is set (CI), where it fails.
func TestFleet_short(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the fleet takes a minute or two")
	}
	if why := canCreateNamespaces(); why != "" {
		t.Skipf("no fleet here: %s", why)
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		if os.Getenv("BATON_REQUIRE_TOOLS") != "" {
			t.Fatal("haproxy is required (BATON_REQUIRE_TOOLS is set) but not installed")
		}
		t.Skip("haproxy is not installed")
	}
	f, err := newFleet(context.Background(), shortParams, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.close(t.Failed())
		if left := nsPids(f.net.lb); len(left) > 0 {
			t.Errorf("processes left in the load balancer's namespace: %v", left)
		}
	})
	for _, name := range scenarioNames {
		t.Run(name, func(t *testing.T) {
			r, err := f.runScenario(name)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (%s): %d requests, %d failed %v, %d of %d lost, %d DOWN, %d retries, time to DOWN %v, exits %v, HAProxy errors by server %v; %v",
				r.Scenario, r.Variant, r.Requests, r.Failed, r.FailedBy, r.Lost, r.Acked, r.Down, r.Retries, r.TimeToDown, r.Exits, r.ServerErrors, r.Notes)
			if r.Acked == 0 {
				t.Fatal("no order was acknowledged")
			}
			if r.Lost != 0 {
				t.Errorf("%d acknowledged orders lost", r.Lost)
			}
			if r.Retries != 0 {
				t.Errorf("HAProxy retried or redispatched %d times: failures were hidden", r.Retries)
			}
			switch name {
			case "deploy", "deploy-light", "replace", "orchestrator":
				if r.Failed != 0 {
					t.Errorf("want 0 failed, have %d: %v", r.Failed, r.FailedBy)
				}
				for _, code := range r.Exits {
					if code != 0 {
						t.Errorf("want every process to exit 0 (drained), have %v", r.Exits)
						break
					}
				}
			case "lost-kill", "lost-link":
				for server := range r.ServerErrors {
					if server != "h2" {
						t.Errorf("errors on %s, not the lost host: %v", server, r.ServerErrors)
					}
				}
				if r.TimeToDown <= 0 {
					t.Error("HAProxy never marked the lost host DOWN")
				}
			}
			if strings.HasPrefix(name, "deploy") && r.Down != 0 {
				t.Errorf("want 0 DOWN transitions during the rolling deploy, have %d", r.Down)
			}
		})
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
