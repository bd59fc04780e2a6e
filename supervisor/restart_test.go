package supervisor

import (
	"testing"
	"time"

	"github.com/baton-run/baton/supervisor/config"
)

func TestBackoff_growsAndIsCapped(t *testing.T) {
	pol := config.RestartConfig{Backoff: time.Second, MaxBackoff: 10 * time.Second}
	prev := time.Duration(0)
	for n := 1; n <= 8; n++ {
		lo, hi := backoff(pol, n, 1), backoff(pol, n, 0)
		if hi > pol.MaxBackoff {
			t.Fatalf("restart %d: %v above the cap", n, hi)
		}
		if n <= 4 && lo <= prev {
			t.Fatalf("restart %d: %v does not grow from %v", n, lo, prev)
		}
		prev = hi
	}
	if got := backoff(pol, 1, 0); got != time.Second {
		t.Fatalf("first backoff: want 1s, have %v", got)
	}
	if got := backoff(pol, 30, 0); got != 10*time.Second {
		t.Fatalf("capped backoff: want 10s, have %v", got)
	}
}

// The restart policy, fed with how runs ended.
func TestRestartTracker(t *testing.T) {
	pol := config.RestartConfig{Policy: config.RestartAlways, Backoff: time.Second, MaxBackoff: 8 * time.Second, ResetAfter: time.Minute}
	type run struct {
		clean  bool
		uptime time.Duration
		want   restartDecision
	}
	for _, tc := range []struct {
		name   string
		policy string
		runs   []run
	}{
		{"always: failures back off", config.RestartAlways, []run{
			{false, 0, restartDecision{restart: true, delay: time.Second, attempt: 1}},
			{false, time.Second, restartDecision{restart: true, delay: 2 * time.Second, attempt: 2}},
			{true, time.Second, restartDecision{restart: true, delay: 4 * time.Second, attempt: 3}},
		}},
		{"a stable run starts over", config.RestartAlways, []run{
			{false, 0, restartDecision{restart: true, delay: time.Second, attempt: 1}},
			{false, 0, restartDecision{restart: true, delay: 2 * time.Second, attempt: 2}},
			{false, time.Minute, restartDecision{restart: true, delay: time.Second, attempt: 1}},
		}},
		{"capped", config.RestartAlways, []run{
			{false, 0, restartDecision{restart: true, delay: time.Second, attempt: 1}},
			{false, 0, restartDecision{restart: true, delay: 2 * time.Second, attempt: 2}},
			{false, 0, restartDecision{restart: true, delay: 4 * time.Second, attempt: 3}},
			{false, 0, restartDecision{restart: true, delay: 8 * time.Second, attempt: 4}},
			{false, 0, restartDecision{restart: true, delay: 8 * time.Second, attempt: 5}},
		}},
		{"on-failure: a clean exit stays down", config.RestartOnFailure, []run{
			{false, 0, restartDecision{restart: true, delay: time.Second, attempt: 1}},
			{true, time.Second, restartDecision{reason: `exit status 0 and restart policy "on-failure"`}},
		}},
		{"never", config.RestartNever, []run{
			{false, 0, restartDecision{reason: `restart policy "never"`}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pol
			p.Policy = tc.policy
			tr := restartTracker{policy: p}
			for i, r := range tc.runs {
				if have := tr.next(r.clean, r.uptime, 0); have != r.want {
					t.Fatalf("run %d: want %+v, have %+v", i+1, r.want, have)
				}
			}
		})
	}
}
