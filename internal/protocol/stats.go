package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The request counters a child reports on its notify socket, so that a
// supervisor can judge a new generation by the traffic it served. sd_notify
// lets services send fields of their own; the field is
//
//	X_BATON_STATS=1 TOTAL ERRORS B0 B1 … B16
//
// version 1, then the counts since the process started: requests
// answered, those answered 5xx, and the requests by latency, in the
// buckets of StatsBuckets (the last one takes the rest). Counts only grow,
// so a reader takes the difference of two reports.
const (
	// EnvStatsInterval, set by the supervisor, asks the child to report
	// its counters at that interval (a Go duration). Without it a child
	// neither counts nor reports.
	EnvStatsInterval = "BATON_STATS_INTERVAL"
	// StatsField is the notify field of the counters.
	StatsField = "X_BATON_STATS"
	// StatsVersion is the version of the field's format.
	StatsVersion = 1
)

// StatsBuckets are the upper bounds of the latency buckets; a last
// bucket, beyond them, takes the rest.
var StatsBuckets = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Stats are a child's request counters.
type Stats struct {
	Total   uint64   // requests answered
	Errors  uint64   // of which 5xx
	Buckets []uint64 // by latency: len(StatsBuckets)+1
}

// Bucket returns the bucket of a request that took d.
func Bucket(d time.Duration) int {
	for i, b := range StatsBuckets {
		if d <= b {
			return i
		}
	}
	return len(StatsBuckets)
}

// Format renders s as the value of StatsField.
func (s Stats) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %d %d", StatsVersion, s.Total, s.Errors)
	for _, n := range s.Buckets {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(n, 10))
	}
	return b.String()
}

// ParseStats parses the value of StatsField.
func ParseStats(v string) (Stats, error) {
	f := strings.Fields(v)
	if len(f) == 0 || f[0] != strconv.Itoa(StatsVersion) {
		return Stats{}, fmt.Errorf("protocol: %s: unknown version in %q", StatsField, truncate([]byte(v)))
	}
	if len(f) != 3+len(StatsBuckets)+1 {
		return Stats{}, fmt.Errorf("protocol: %s: want %d numbers, have %d", StatsField, 2+len(StatsBuckets)+1, len(f)-1)
	}
	n := make([]uint64, len(f)-1)
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return Stats{}, fmt.Errorf("protocol: %s: %q is not a count", StatsField, truncate([]byte(s)))
		}
		n[i] = v
	}
	st := Stats{Total: n[0], Errors: n[1], Buckets: n[2:]}
	var sum uint64
	for _, c := range st.Buckets {
		sum += c
	}
	if st.Errors > st.Total || sum != st.Total {
		return Stats{}, fmt.Errorf("protocol: %s: counts do not add up", StatsField)
	}
	return st, nil
}

// Sub returns the counts of s since an earlier report of the same process.
func (s Stats) Sub(earlier Stats) Stats {
	d := Stats{Total: s.Total - earlier.Total, Errors: s.Errors - earlier.Errors, Buckets: make([]uint64, len(s.Buckets))}
	for i := range s.Buckets {
		var e uint64
		if i < len(earlier.Buckets) {
			e = earlier.Buckets[i]
		}
		d.Buckets[i] = s.Buckets[i] - e
	}
	return d
}

// Above returns how many requests may have taken longer than d: those in
// the buckets whose upper bound is above d.
func (s Stats) Above(d time.Duration) uint64 {
	var n uint64
	for i, c := range s.Buckets {
		if i >= len(StatsBuckets) || StatsBuckets[i] > d {
			n += c
		}
	}
	return n
}

// Quantile returns the upper bound of the bucket in which the q-th
// quantile (0 < q ≤ 1) of the latencies falls: a bound, never an
// underestimate. It returns 0 without requests, and for the last bucket
// twice the last bound.
func (s Stats) Quantile(q float64) time.Duration {
	if s.Total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.Total) + 0.999999)
	var seen uint64
	for i, n := range s.Buckets {
		seen += n
		if seen >= rank {
			if i < len(StatsBuckets) {
				return StatsBuckets[i]
			}
			break
		}
	}
	return 2 * StatsBuckets[len(StatsBuckets)-1]
}
