package supervisor

import (
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// histogramState is one series of a histogram, as an upgrade in place
// passes it to the new image: the counts are cumulative, one per bucket
// bound of the histogram, in order.
type histogramState struct {
	Name    string            `json:"name"`
	Labels  map[string]string `json:"labels"`
	Count   uint64            `json:"count"`
	Sum     float64           `json:"sum"`
	Buckets []uint64          `json:"buckets"`
}

// carriedHistogram is a histogram whose series go on across upgrades of
// baton in place: what the images before observed is added to what this
// one observes, so that a scraper sees counts that only grow, as for
// the counters read from the programs' status.
type carriedHistogram struct {
	vec     *prometheus.HistogramVec
	desc    *prometheus.Desc
	name    string
	labels  []string
	buckets []float64

	mu      sync.Mutex
	carried map[string]histogramState // by label values, joined
}

func newCarriedHistogram(opts prometheus.HistogramOpts, labels []string) *carriedHistogram {
	return &carriedHistogram{
		vec:     prometheus.NewHistogramVec(opts, labels),
		desc:    prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		name:    opts.Name,
		labels:  labels,
		buckets: opts.Buckets,
		carried: map[string]histogramState{},
	}
}

// WithLabelValues returns the series to observe.
func (h *carriedHistogram) WithLabelValues(values ...string) prometheus.Observer {
	return h.vec.WithLabelValues(values...)
}

func (h *carriedHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *carriedHistogram) Collect(ch chan<- prometheus.Metric) {
	for _, st := range h.series() {
		values := make([]string, len(h.labels))
		for i, l := range h.labels {
			values[i] = st.Labels[l]
		}
		bounds := make(map[float64]uint64, len(h.buckets))
		for i, b := range h.buckets {
			if i < len(st.Buckets) {
				bounds[b] = st.Buckets[i]
			}
		}
		ch <- prometheus.MustNewConstHistogram(h.desc, st.Count, st.Sum, bounds, values...)
	}
}

// series returns every series: this image's observations plus what
// was carried over, in a stable order.
func (h *carriedHistogram) series() []histogramState {
	out := map[string]histogramState{}
	mc := make(chan prometheus.Metric)
	go func() {
		h.vec.Collect(mc)
		close(mc)
	}()
	for m := range mc {
		var d dto.Metric
		if m.Write(&d) != nil || d.Histogram == nil {
			continue
		}
		st := histogramState{Name: h.name, Labels: map[string]string{}, Count: d.Histogram.GetSampleCount(), Sum: d.Histogram.GetSampleSum()}
		for _, lp := range d.Label {
			st.Labels[lp.GetName()] = lp.GetValue()
		}
		for _, b := range d.Histogram.Bucket {
			st.Buckets = append(st.Buckets, b.GetCumulativeCount())
		}
		out[h.key(st.Labels)] = st
	}
	h.mu.Lock()
	for k, c := range h.carried {
		st, ok := out[k]
		if !ok {
			st = histogramState{Name: h.name, Labels: c.Labels, Buckets: make([]uint64, len(h.buckets))}
		}
		st.Count += c.Count
		st.Sum += c.Sum
		for i := range st.Buckets {
			if i < len(c.Buckets) {
				st.Buckets[i] += c.Buckets[i]
			}
		}
		out[k] = st
	}
	h.mu.Unlock()
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	list := make([]histogramState, 0, len(keys))
	for _, k := range keys {
		list = append(list, out[k])
	}
	return list
}

// carry adds the series an image before observed, those of this
// histogram's name with its bounds; others are ignored.
func (h *carriedHistogram) carry(states []histogramState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range states {
		if st.Name != h.name || len(st.Buckets) != len(h.buckets) {
			continue
		}
		h.carried[h.key(st.Labels)] = st
	}
}

func (h *carriedHistogram) key(labels map[string]string) string {
	values := make([]string, len(h.labels))
	for i, l := range h.labels {
		values[i] = labels[l]
	}
	return strings.Join(values, "\x00")
}
