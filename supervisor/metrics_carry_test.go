package supervisor

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A histogram carried across an upgrade: the new image's series are the
// old image's plus its own, per label set, counts, sums and buckets; a
// series the new image has not observed yet is there too; series of
// another name or other bounds are not taken.
func TestCarriedHistogram_goesOnAcrossAnUpgrade(t *testing.T) {
	opts := prometheus.HistogramOpts{Name: "baton_test_seconds", Help: "test", Buckets: []float64{.25, 1}}
	before := newCarriedHistogram(opts, []string{"program"})
	before.WithLabelValues("web").Observe(.25)
	before.WithLabelValues("web").Observe(.5)
	before.WithLabelValues("api").Observe(2)
	passed := before.series()
	passed = append(passed, histogramState{Name: "other", Labels: map[string]string{"program": "web"}, Count: 9, Buckets: []uint64{9, 9}},
		histogramState{Name: "baton_test_seconds", Labels: map[string]string{"program": "x"}, Count: 9, Buckets: []uint64{9}})

	after := newCarriedHistogram(opts, []string{"program"})
	after.carry(passed)
	after.WithLabelValues("web").Observe(.25)
	reg := prometheus.NewRegistry()
	reg.MustRegister(after)
	want := `
# HELP baton_test_seconds test
# TYPE baton_test_seconds histogram
baton_test_seconds_bucket{program="api",le="0.25"} 0
baton_test_seconds_bucket{program="api",le="1"} 0
baton_test_seconds_bucket{program="api",le="+Inf"} 1
baton_test_seconds_sum{program="api"} 2
baton_test_seconds_count{program="api"} 1
baton_test_seconds_bucket{program="web",le="0.25"} 2
baton_test_seconds_bucket{program="web",le="1"} 3
baton_test_seconds_bucket{program="web",le="+Inf"} 3
baton_test_seconds_sum{program="web"} 1
baton_test_seconds_count{program="web"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "baton_test_seconds"); err != nil {
		t.Fatal(err)
	}
	// And on through the next upgrade.
	again := newCarriedHistogram(opts, []string{"program"})
	again.carry(after.series())
	if got := again.series(); len(got) != 2 || got[1].Count != 3 || got[0].Count != 1 {
		t.Fatalf("after a second upgrade: %+v", got)
	}
}
