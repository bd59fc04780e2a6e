package main

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
)

// fault makes the example a bad version on purpose, from ORDERS_FAULT:
// a deploy that passes READY and then fails, as the bad deploys baton's
// bake reverts do. It exists to try a bake by hand and for the
// benchmark's bad deploys; unset, it costs nothing (no handler is added).
//
//	ORDERS_FAULT="errors=10%"    answer that share of POST /orders 500
//	ORDERS_FAULT="latency=50ms"  wait that long in each POST /orders
//	ORDERS_FAULT="crash=2s"      exit 2 that long after serving began
//
// Items combine, separated by commas: "errors=5%,latency=20ms".
type fault struct {
	// errorsPPM is the share of POST /orders answered 500, in parts per
	// million. The failing requests are spread evenly (the 10th, 20th, …
	// for 10 %), so that a share is a count a test can check.
	errorsPPM int64
	latency   time.Duration // added before each POST /orders is handled
	crash     time.Duration // after serving began: exit 2, as a crash
	posts     atomic.Int64  // POST /orders seen, for errorsPPM
}

// faultCrashStatus is the exit status of a crash the fault asked for.
const faultCrashStatus = 2

// parseFault parses ORDERS_FAULT: nil for an empty value, an error that
// names the item for a bad one.
func parseFault(s string) (*fault, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	f := &fault{}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("ORDERS_FAULT: %q: want key=value, as in errors=10%%, latency=50ms or crash=2s", item)
		}
		if seen[k] {
			return nil, fmt.Errorf("ORDERS_FAULT: %s given twice", k)
		}
		seen[k] = true
		switch k {
		case "errors":
			pct, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
			if err != nil || !strings.HasSuffix(v, "%") || pct <= 0 || pct > 100 {
				return nil, fmt.Errorf("ORDERS_FAULT: errors=%s: want a share above 0 and at most 100%%, as in errors=10%%", v)
			}
			f.errorsPPM = int64(pct*1e4 + 0.5)
		case "latency", "crash":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("ORDERS_FAULT: %s=%s: want a duration above 0, as in %s=2s", k, v, k)
			}
			if k == "latency" {
				f.latency = d
			} else {
				f.crash = d
			}
		default:
			return nil, fmt.Errorf("ORDERS_FAULT: unknown fault %q: want errors, latency or crash", k)
		}
	}
	return f, nil
}

// String renders f as ORDERS_FAULT would give it, for the log.
func (f *fault) String() string {
	var parts []string
	if f.errorsPPM > 0 {
		parts = append(parts, "errors="+strconv.FormatFloat(float64(f.errorsPPM)/1e4, 'f', -1, 64)+"%")
	}
	if f.latency > 0 {
		parts = append(parts, "latency="+f.latency.String())
	}
	if f.crash > 0 {
		parts = append(parts, "crash="+f.crash.String())
	}
	return strings.Join(parts, ",")
}

// errInjected is the body of an injected 500.
var errInjected = errors.New("injected fault (ORDERS_FAULT)")

// handler returns what runs before POST /orders, or nil when neither
// errors nor latency is asked.
func (f *fault) handler() gin.HandlerFunc {
	if f == nil || (f.errorsPPM == 0 && f.latency == 0) {
		return nil
	}
	return func(c *gin.Context) {
		if f.latency > 0 {
			t := time.NewTimer(f.latency)
			select {
			case <-t.C:
			case <-c.Request.Context().Done():
				t.Stop()
				c.Abort() // the client has gone
				return
			}
		}
		if f.errorsPPM > 0 {
			// Request n fails when the share's running count of failures
			// steps up at n: floor(n·share) > floor((n-1)·share).
			n := f.posts.Add(1)
			if n*f.errorsPPM/1e6 > (n-1)*f.errorsPPM/1e6 {
				c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": errInjected.Error()})
				return
			}
		}
		c.Next()
	}
}
