package supervisor

import (
	"time"

	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
)

// programEnv is everything a program needs from outside its own state:
// how to resolve and start a generation, timers, where logs go, and whom
// to tell what happened. It is the seam the phase tests replace with
// fakes; the supervisor builds the real one in Run.
type programEnv struct {
	log      hclog.Logger // baton's events
	outLog   hclog.Logger // the programs' output
	logFiles *logFiles    // the programs' log files
	// resolve finds a config's executable and computes its generation
	// key (see resolve in generation.go).
	resolve func(cfg *config.Program) (path, key string, err error)
	// start starts a generation; its events go to spec.post.
	start func(spec spawnSpec) (*generation, error)
	// after calls f after d, unless stop is called first.
	after func(d time.Duration, f func()) (stop func() bool)
	// jitter returns a number in [0, 1) that spreads restarts.
	jitter func() float64
	// observe is told when a generation became ready or exited.
	observe func(Event)
	// handedOver is told each completed handover: its duration and how
	// long each of its phases took.
	handedOver func(program string, readyIn time.Duration, phases []phaseTime)
	// drained is told how long an old generation took to exit after it
	// was told to stop by a handover.
	drained func(program string, d time.Duration)
	// bakeProbe probes path on g's listener every interval during its
	// bake, and reports each answer of g's own (an error when it failed);
	// cancel ends it.
	bakeProbe func(g *generation, path, listener string, every time.Duration, report func(error)) (cancel func())
	// baked is told each bake's verdict and duration.
	baked func(program string, passed bool, d time.Duration)
	// depChanged is told each change of what the programs that start
	// after this one wait for (the loop releases them).
	depChanged func(program string, st depState)
	// monitor watches the serving generation's health (monitor.go),
	// posting to report; stop ends it.
	monitor func(g *generation, cfg *config.Program, report func(event)) (stop func())
	// keep keeps the binary g runs, for rollback, and posts evKept to
	// its program once it did.
	keep func(program string, g *generation, done func(keptBinary))
}

// realAfter is programEnv.after with the real clock.
func realAfter(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
