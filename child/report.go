package child

// What a Server reports to its supervisor beyond READY and STOPPING: its
// request counters (for a bake) and systemd's watchdog pings (for
// liveness), each only when the supervisor asks for it.

import (
	"context"
	"os"
	"sync/atomic"
	"time"

	"github.com/baton-run/baton/internal/protocol"
)

// requestStats counts the requests a Server answered, for a supervisor
// that judges a new generation by them (baton's bake). It exists only
// when the supervisor asks for it with BATON_STATS_INTERVAL: otherwise
// the request path does not count.
type requestStats struct {
	every   time.Duration
	total   atomic.Uint64
	errors  atomic.Uint64
	buckets []atomic.Uint64
}

// takeStatsEnv reads and removes BATON_STATS_INTERVAL; nil when it is
// not set or not a duration.
func takeStatsEnv() *requestStats {
	v := os.Getenv(protocol.EnvStatsInterval)
	os.Unsetenv(protocol.EnvStatsInterval)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return nil
	}
	return &requestStats{every: d, buckets: make([]atomic.Uint64, len(protocol.StatsBuckets)+1)}
}

func (st *requestStats) record(code int, took time.Duration) {
	st.total.Add(1)
	if code >= 500 {
		st.errors.Add(1)
	}
	st.buckets[protocol.Bucket(took)].Add(1)
}

func (st *requestStats) snapshot() protocol.Stats {
	s := protocol.Stats{Buckets: make([]uint64, len(st.buckets))}
	for i := range st.buckets {
		s.Buckets[i] = st.buckets[i].Load()
		s.Total += s.Buckets[i]
	}
	s.Errors = min(st.errors.Load(), s.Total)
	return s
}

// report sends the counters on the notify socket at the interval asked,
// until done is closed.
func (st *requestStats) report(done <-chan struct{}) {
	t := time.NewTicker(st.every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			Notify(protocol.StatsField + "=" + st.snapshot().Format())
		}
	}
}

// pingWatchdog sends WATCHDOG=1 every interval until stop is closed,
// unless Config.WatchdogCheck fails.
func (s *Server) pingWatchdog(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if check := s.cfg.WatchdogCheck; check != nil {
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := check(ctx)
			cancel()
			if err != nil {
				s.log.Warn("watchdog check failed: no WATCHDOG=1", "error", err)
				continue
			}
		}
		s.notify("WATCHDOG=1")
	}
}
