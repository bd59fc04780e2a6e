package child

import (
	"errors"
	"fmt"
	"strings"
)

// Exit statuses of a program that ends with ExitCode(srv.Serve(…)).
const (
	// ExitOK: every request in flight and every background task finished
	// within their bounds. Idle connections closed by the drain don't count.
	ExitOK = 0
	// ExitFailure: serving failed, or a background task failed.
	ExitFailure = 1
	// ExitAbandoned: a bound of the drain cut work off: requests still in
	// flight at the shutdown timeout, hijacked connections (WebSockets)
	// still open at the drain timeout, or background tasks still running
	// at the task deadline; the log says how much.
	ExitAbandoned = 3
)

// DrainError reports work that a drain cut off.
type DrainError struct {
	// Requests is the number of requests still in flight when the
	// shutdown timeout expired: streaming handlers (Server-Sent Events)
	// that ignored DrainContext count here.
	Requests int
	// Hijacked is the number of connections taken over by their handlers
	// (WebSockets) that were still open at the drain timeout, and that
	// the drain closed: their handlers ignored DrainContext.
	Hijacked int
	// Tasks names the background tasks still running at the task deadline.
	Tasks []string
	// Pending is the work those tasks reported as not done.
	Pending int
}

// Error says how much the drain cut off.
func (e *DrainError) Error() string {
	var parts []string
	if e.Requests > 0 {
		parts = append(parts, fmt.Sprintf("%d requests in flight", e.Requests))
	}
	if e.Hijacked > 0 {
		parts = append(parts, fmt.Sprintf("%d hijacked connections (WebSockets)", e.Hijacked))
	}
	if len(e.Tasks) > 0 {
		parts = append(parts, fmt.Sprintf("%d background tasks (%s) holding %d pending items",
			len(e.Tasks), strings.Join(e.Tasks, ", "), e.Pending))
	}
	if len(parts) == 0 {
		return "child: drain cut nothing off"
	}
	return "child: drain cut off " + strings.Join(parts, " and ")
}

// ExitCode maps the result of Serve to the process's exit status:
// ExitOK for nil, ExitAbandoned when a drain bound cut work off, and
// ExitFailure for any other error.
func ExitCode(err error) int {
	var derr *DrainError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &derr):
		return ExitAbandoned
	default:
		return ExitFailure
	}
}
