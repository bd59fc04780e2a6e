package supervisor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/baton-run/baton/supervisor/control"
)

// Health endpoints, for load balancers and orchestrators in front of the
// host (HAProxy's option httpchk, a Kubernetes readinessProbe, a Nomad
// check):
//
//	GET /livez            200 while baton's loop and every program's
//	                      goroutine answer within livezTimeout; 503 when
//	                      one is stuck (restart baton)
//	GET /readyz           200 when every program that should serve
//	                      serves; 503 otherwise, and from the moment the
//	                      final stop begins
//	GET /readyz/{program} the same for one program
//
// A program "should serve" unless it was stopped on request (baton stop)
// or is a one-shot that completed (a one-shot still running, or failed,
// keeps the host not ready: what comes after it waits):
// one starting for the first time, waiting out a restart backoff, left
// down by its restart policy, or building in baton dev makes the host not
// ready. A handover never does: the old generation serves until the new
// one is ready, and the program stays running throughout; a bake neither:
// both generations serve until its verdict.
//
// With shutdown_delay, SIGTERM first fails /readyz and keeps every
// program serving for that long, so that the load balancer stops sending
// new requests before any program drains.

// livezTimeout bounds the answer of the loop and of every program's
// goroutine for /livez.
const livezTimeout = 5 * time.Second

// healthState is what the health endpoints need besides the status.
type healthState struct {
	// leaving: the final stop began (the shutdown delay runs, or the
	// programs stop). /readyz fails from then on.
	leaving atomic.Bool
}

// readiness is the body of /readyz.
type readiness struct {
	Ready    bool               `json:"ready"`
	Stopping bool               `json:"stopping,omitempty"` // the final stop began
	Programs []programReadiness `json:"programs"`
}

type programReadiness struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Ready bool   `json:"ready"`
}

// ready computes /readyz from the programs' status: only the named
// program when name is not "", and false when it is unknown.
func ready(leaving bool, sts []control.ProgramStatus, name string) readiness {
	r := readiness{Stopping: leaving}
	serving, should := 0, 0
	for _, st := range sts {
		if name != "" && st.Name != name {
			continue
		}
		// Baking: the new generation serves beside the old one, which
		// serves until the verdict. Either way the program serves.
		serves := st.State == control.StateRunning || st.State == control.StateBaking
		pr := programReadiness{Name: st.Name, State: st.State, Ready: serves}
		r.Programs = append(r.Programs, pr)
		if st.State == control.StateStopped || st.State == control.StateStopping {
			continue // stopped on request: not expected to serve
		}
		if st.State == control.StateExited && st.Reason == oneshotDone {
			pr.Ready = true // a one-shot that completed: it serves nothing
			continue
		}
		should++
		if pr.Ready {
			serving++
		}
	}
	// A host where nothing should serve serves nothing: not ready.
	r.Ready = !leaving && should > 0 && serving == should
	return r
}

// healthHandler serves /livez and /readyz.
func (s *Supervisor) healthHandler(mux *http.ServeMux) {
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.statusWithin(r.Context(), livezTimeout); !ok {
			writeHealth(w, http.StatusServiceUnavailable, map[string]any{"live": false, "error": "baton's loop or a program's goroutine does not answer"})
			return
		}
		writeHealth(w, http.StatusOK, map[string]any{"live": true})
	})
	readyz := func(w http.ResponseWriter, r *http.Request) {
		sts, ok := s.statusWithin(r.Context(), livezTimeout)
		if !ok {
			writeHealth(w, http.StatusServiceUnavailable, readiness{})
			return
		}
		name := r.PathValue("program")
		rd := ready(s.health.leaving.Load(), sts, name)
		code := http.StatusOK
		switch {
		case name != "" && len(rd.Programs) == 0:
			code = http.StatusNotFound
		case !rd.Ready:
			code = http.StatusServiceUnavailable
		}
		writeHealth(w, code, rd)
	}
	mux.HandleFunc("GET /readyz", readyz)
	mux.HandleFunc("GET /readyz/{program}", readyz)
}

// statusWithin returns Status, or false when it did not come within d:
// the loop or a program's goroutine is stuck.
func (s *Supervisor) statusWithin(ctx context.Context, d time.Duration) ([]control.ProgramStatus, bool) {
	res := make(chan []control.ProgramStatus, 1)
	go func() { res <- s.Status() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case sts := <-res:
		return sts, true
	case <-t.C:
		return nil, false
	case <-ctx.Done():
		return nil, false
	}
}

func writeHealth(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

// serveHealth serves /livez and /readyz on l, the health block's own
// address, until the loop ended.
func (s *Supervisor) serveHealth(l net.Listener) {
	mux := http.NewServeMux()
	s.healthHandler(mux)
	s.serveHTTP(l, mux, "health server")
}

// HealthAddr returns the address /livez and /readyz are served on: the
// health block's, or the metrics block's, or "" for none.
func (s *Supervisor) HealthAddr() string {
	switch {
	case s.healthLn != nil:
		return s.healthLn.Addr().String()
	case s.metricsLn != nil:
		return s.metricsLn.Addr().String()
	}
	return ""
}

// beginStop is the start of the final stop (SIGTERM, SIGINT, Run's
// context): /readyz fails at once. With a shutdown delay the programs
// keep serving until the returned channel fires, when the loop stops
// them; without one they stop now and the channel is nil. It runs on the
// loop.
func (s *Supervisor) beginStop(reason error, stopBackground func()) <-chan time.Time {
	s.health.leaving.Store(true)
	d := s.file.ShutdownDelay
	if d <= 0 || s.stopping {
		s.log.Info("stopping every program", "reason", reason)
		s.shutdown(stopBackground)
		return nil
	}
	s.systemd.stopping()
	s.log.Info("stopping: /readyz fails now; every program keeps serving for the shutdown delay", "reason", reason, "shutdown_delay", d)
	return time.After(d)
}

// endDelay stops every program once the shutdown delay has passed.
func (s *Supervisor) endDelay(stopBackground func()) {
	if s.stopping {
		return
	}
	s.log.Info("shutdown delay over: stopping every program", "shutdown_delay", s.file.ShutdownDelay)
	s.shutdown(stopBackground)
}
