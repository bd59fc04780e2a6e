package supervisor

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/baton-run/baton/internal/procfs"
	"github.com/baton-run/baton/supervisor/config"
)

// The health of the serving generation: a liveness probe, systemd's
// watchdog and a memory limit. Where the peers kill a program that hung
// or grew, baton replaces it by a handover: a fresh generation takes the
// socket, then the old one is stopped, so no request is refused. A hung
// generation gets SIGQUIT before its SIGKILL, so that a Go program prints
// where each goroutine was.

// monitor samples generation g while it serves: its memory every
// limits.interval, and its liveness probe every liveness.interval,
// reporting to its program. stop ends it without waiting: it is called
// from the program's goroutine, which a sampler may be posting to; a
// sampler ends at its next step, or when g is reaped.
func monitor(g *generation, cfg *config.Program, report func(event)) (stop func()) {
	done := make(chan struct{})
	every := func(d time.Duration, f func()) {
		go func() {
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-g.done:
					return
				case <-t.C:
				}
				select {
				case <-done: // stopped while it waited for the tick
					return
				default:
					f()
				}
			}
		}()
	}
	every(cfg.Limits.Interval, func() {
		if rss, err := groupRSS(g.pid); err == nil {
			report(evMemory{g, rss})
		}
	})
	if l := cfg.Liveness; l != nil && l.Path != "" {
		var s *socket
		for i, ln := range g.cfg.Listeners {
			if ln.Name == l.Listener {
				s = g.lease.sockets[i]
			}
		}
		if s != nil {
			every(l.Interval, func() {
				for range 8 { // the old generation may still accept some
					if err := probeOnce(s, l.Path, g.pid); !errors.Is(err, errNotOurs) {
						report(evProbe{g, err})
						return
					}
				}
			})
		}
	}
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// pageSize converts /proc's pages to bytes.
var pageSize = int64(os.Getpagesize())

// groupRSS returns the resident memory, in bytes, of every process of
// process group pgid, from /proc.
func groupRSS(pgid int) (int64, error) {
	all, err := procfs.All()
	if err != nil {
		return 0, err
	}
	var total int64
	found := false
	for _, st := range all {
		if st.PGRP == pgid || st.PID == pgid {
			total += st.RSS * pageSize
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("no process in group %d", pgid)
	}
	return total, nil
}

// startMonitor watches g, which serves from now on.
func (p *program) startMonitor(g *generation) {
	g.stopMonitor = p.env.monitor(g, g.cfg, p.post)
	if l := g.cfg.Liveness; l != nil && l.Watchdog > 0 {
		p.armWatchdog(g)
	}
}

func (p *program) armWatchdog(g *generation) {
	g.watchdog.cancel()
	g.watchdog = p.armTimer(g.cfg.Liveness.Watchdog, func(id uint64) event { return evWatchdog{g, id} })
}

// onProbe counts the liveness probes of the serving generation; enough
// failures in a row and it is replaced.
func (p *program) onProbe(g *generation, err error) {
	if g != p.current {
		return
	}
	if err == nil {
		g.probeFailures = 0
		p.stats.LastLiveness = "ok"
		return
	}
	g.probeFailures++
	p.stats.LastLiveness = fmt.Sprintf("failed %d of %d: %v", g.probeFailures, g.cfg.Liveness.Failures, err)
	p.log.Warn("liveness probe failed", "gen", g.n, "failures", g.probeFailures, "of", g.cfg.Liveness.Failures, "error", err)
	if g.probeFailures >= g.cfg.Liveness.Failures {
		p.replace(g, true, fmt.Sprintf("liveness: %d probes of GET %s failed in a row, the last: %v", g.probeFailures, g.cfg.Liveness.Path, err))
	}
}

// onWatchdog: the serving generation sent no WATCHDOG=1 in time.
func (p *program) onWatchdog(g *generation, id uint64) {
	if g != p.current || g.watchdog.id != id {
		return
	}
	g.watchdog = timer{}
	p.stats.LastLiveness = fmt.Sprintf("no WATCHDOG=1 within %v", g.cfg.Liveness.Watchdog)
	p.replace(g, true, "liveness: "+p.stats.LastLiveness)
}

// onMemory takes a sample of a generation's memory; above the limit the
// serving one is replaced.
func (p *program) onMemory(g *generation, rss int64) {
	g.rss = rss
	if limit := g.cfg.Limits.Memory; limit > 0 && g == p.current && rss > limit {
		p.replace(g, false, fmt.Sprintf("memory: %d MiB resident, above the limit of %d MiB", rss>>20, limit>>20))
	}
}

// replace hands the serving generation g over to a fresh one, because it
// hung (liveness) or grew (memory). Once the fresh one is ready, g is
// stopped as in any handover; a hung one gets SIGQUIT before its SIGKILL.
// A handover already under way replaces it anyway: nothing more starts.
func (p *program) replace(g *generation, hung bool, why string) {
	if g.replacedBy != "" || p.attempt != nil || p.baking != nil {
		return
	}
	g.replacedBy, g.hung = why, hung
	if hung {
		p.stats.LivenessFailures++
	} else {
		p.stats.MemoryReplacements++
	}
	p.log.Error("replacing the serving generation by a handover", "gen", g.n, "pid", g.pid, "why", why)
	p.begin(&request{reason: why, force: true})
}
