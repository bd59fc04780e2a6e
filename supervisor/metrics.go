package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/baton-run/baton/supervisor/control"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the Prometheus metrics of a supervisor, on a registry of
// its own. Counters and gauges are read from the programs' status at
// scrape time; handover durations are observed as they happen.
type metrics struct {
	reg      *prometheus.Registry
	handover *carriedHistogram
	phase    *carriedHistogram
	bake     *carriedHistogram
}

var (
	descRestarts  = prometheus.NewDesc("baton_program_restarts_total", "Restarts after the serving generation exited on its own.", []string{"program"}, nil)
	descHandovers = prometheus.NewDesc("baton_program_handovers_total", "Completed handovers from one generation to the next.", []string{"program"}, nil)
	descRollbacks = prometheus.NewDesc("baton_program_rollbacks_total", "New generations that exited or missed their ready timeout while another one served.", []string{"program"}, nil)
	descLiveness  = prometheus.NewDesc("baton_program_liveness_failures_total", "Serving generations replaced by a handover because they hung (liveness probe or watchdog).", []string{"program"}, nil)
	descMemRepl   = prometheus.NewDesc("baton_program_memory_replacements_total", "Serving generations replaced by a handover because they grew past the memory limit.", []string{"program"}, nil)
	descMemory    = prometheus.NewDesc("baton_program_memory_bytes", "Resident memory of the serving generation's process group at the last sample.", []string{"program"}, nil)
	descReverts   = prometheus.NewDesc("baton_program_reverts_total", "New generations that were ready but failed their bake: the old one served on.", []string{"program"}, nil)
	descGen       = prometheus.NewDesc("baton_program_generation", "The generation that serves (0 when none does).", []string{"program"}, nil)
	descUp        = prometheus.NewDesc("baton_program_up", "1 when a generation of the program serves.", []string{"program"}, nil)
	descDraining  = prometheus.NewDesc("baton_program_draining_generations", "Old generations still draining.", []string{"program"}, nil)
)

func newMetrics(s *Supervisor) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		handover: newCarriedHistogram(prometheus.HistogramOpts{
			Name:    "baton_handover_duration_seconds",
			Help:    "From the start of a new generation until it was ready and the old one was told to stop.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"program"}),
		phase: newCarriedHistogram(prometheus.HistogramOpts{
			Name:    "baton_handover_phase_seconds",
			Help:    "How long each phase of a handover took: read (the trigger to the config read and sockets opened), check (the binary), spawn (the process started), start (its exec and start-up until READY), signal (the old generation told to stop), drain (the old generation gone).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"program", "phase"}),
	}
	m.bake = newCarriedHistogram(prometheus.HistogramOpts{
		Name:    "baton_bake_duration_seconds",
		Help:    "How long new generations baked before their verdict.",
		Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"program", "verdict"})
	m.reg.MustRegister(m.handover, m.phase, m.bake, statusCollector{s},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "baton"}),
		collectors.NewGoCollector())
	return m
}

// histograms returns the series of the histograms, for the image an
// upgrade in place starts; nil without metrics.
func (m *metrics) histograms() []histogramState {
	if m == nil {
		return nil
	}
	var out []histogramState
	for _, h := range []*carriedHistogram{m.handover, m.phase, m.bake} {
		out = append(out, h.series()...)
	}
	return out
}

// carry adds what the image before an upgrade observed.
func (m *metrics) carry(states []histogramState) {
	if m == nil {
		return
	}
	for _, h := range []*carriedHistogram{m.handover, m.phase, m.bake} {
		h.carry(states)
	}
}

func (m *metrics) observeHandover(program string, d time.Duration, phases []phaseTime) {
	if m == nil {
		return
	}
	m.handover.WithLabelValues(program).Observe(d.Seconds())
	for _, p := range phases {
		m.phase.WithLabelValues(program, p.name).Observe(p.d.Seconds())
	}
}

func (m *metrics) observeBake(program string, passed bool, d time.Duration) {
	if m == nil {
		return
	}
	verdict := "failed"
	if passed {
		verdict = "passed"
	}
	m.bake.WithLabelValues(program, verdict).Observe(d.Seconds())
}

func (m *metrics) observeDrain(program string, d time.Duration) {
	if m != nil {
		m.phase.WithLabelValues(program, phaseDrain).Observe(d.Seconds())
	}
}

type statusCollector struct{ s *Supervisor }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRestarts, descHandovers, descRollbacks, descReverts, descLiveness, descMemRepl, descMemory, descGen, descUp, descDraining} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Status() {
		up := 0.0
		if st.State == control.StateRunning {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(st.Restarts), st.Name)
		ch <- prometheus.MustNewConstMetric(descHandovers, prometheus.CounterValue, float64(st.Handovers), st.Name)
		ch <- prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue, float64(st.Rollbacks), st.Name)
		ch <- prometheus.MustNewConstMetric(descReverts, prometheus.CounterValue, float64(st.Reverts), st.Name)
		ch <- prometheus.MustNewConstMetric(descLiveness, prometheus.CounterValue, float64(st.LivenessFailures), st.Name)
		ch <- prometheus.MustNewConstMetric(descMemRepl, prometheus.CounterValue, float64(st.MemoryReplacements), st.Name)
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(st.Memory), st.Name)
		ch <- prometheus.MustNewConstMetric(descGen, prometheus.GaugeValue, float64(st.Generation), st.Name)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, st.Name)
		ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, float64(len(st.Draining)), st.Name)
	}
}

// serveMetrics serves /metrics on l until the loop ended.
func (s *Supervisor) serveMetrics(l net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("baton metrics: /metrics\n"))
	})
	if s.healthLn == nil {
		s.healthHandler(mux) // /livez and /readyz beside /metrics
	}
	s.serveHTTP(l, mux, "metrics server")
}

// serveHTTP serves one of baton's own HTTP servers (control, metrics,
// health) on l until the loop ended; an upgrade holds it meanwhile
// (s.own).
func (s *Supervisor) serveHTTP(l net.Listener, h http.Handler, what string) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.own.started(l, srv)
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-s.loopDone
		// Gracefully, for a moment: a baton logs -f stream ends on
		// loopDone too, and its last word (END) must reach the client.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error(what+" failed", "error", err)
	}
	<-shut // Serve returns when the listener closes, before the handlers
}
