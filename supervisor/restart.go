package supervisor

import (
	"time"

	"github.com/baton-run/baton/supervisor/config"
)

// restartTracker is a program's restart policy as a pure object, fed with
// how each run ended and answering what to do next (nomad's
// RestartTracker is the model). It is owned by the program's goroutine and
// tested without processes.
type restartTracker struct {
	policy   config.RestartConfig
	failures int // consecutive, for the backoff
}

// restartDecision is the tracker's answer.
type restartDecision struct {
	restart bool          // restart after delay; otherwise stay down
	delay   time.Duration // the backoff
	reason  string        // why the program stays down
	attempt int           // consecutive failures so far, for the log
}

// next decides after a run that ended: a serving generation that exited
// on its own (clean: exit status 0) after uptime, or a start that failed
// (not clean, no uptime). jitter, in [0, 1), spreads the restarts of
// programs that failed together.
func (t *restartTracker) next(clean bool, uptime time.Duration, jitter float64) restartDecision {
	switch {
	case t.policy.Policy == config.RestartNever:
		return restartDecision{reason: `restart policy "never"`}
	case t.policy.Policy == config.RestartOnFailure && clean:
		return restartDecision{reason: `exit status 0 and restart policy "on-failure"`}
	}
	if uptime >= t.policy.ResetAfter {
		t.failures = 0
	}
	t.failures++
	return restartDecision{restart: true, delay: backoff(t.policy, t.failures, jitter), attempt: t.failures}
}

// reset forgets the failures: an operator started the program.
func (t *restartTracker) reset() { t.failures = 0 }

// backoff is the wait before restart number n (1, 2, …): the backoff
// doubled each time, capped at max_backoff, less up to 20 % of jitter so
// that programs that failed together do not restart together.
func backoff(pol config.RestartConfig, n int, jitter float64) time.Duration {
	d := pol.Backoff
	for i := 1; i < n && d < pol.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, pol.MaxBackoff)
	return d - time.Duration(float64(d)*0.2*jitter)
}
