package supervisor

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A ping goes out only after the check answered: while the second check
// hangs (a program's goroutine that does not answer status), intervals
// pass without a ping and are reported late; once it answers, the pings
// go on. Cancelled, it returns. The first ping does not wait for an
// interval (here an hour).
func TestWatchdogPings_onlyAfterTheCheckAnswered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var checks atomic.Int32
	hang := make(chan struct{})
	check := func() {
		if checks.Add(1) == 2 {
			<-hang
		}
	}
	pings := make(chan struct{}, 100)
	late := make(chan time.Duration, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchdogPings(ctx, time.Millisecond, check, func() { pings <- struct{}{} }, func(waited time.Duration) {
			if checks.Load() >= 2 {
				late <- waited
			}
		})
	}()
	<-pings // the first check answered
	<-late  // the second hangs, and an interval passed
	<-late
	select {
	case <-pings:
		t.Fatal("a ping while the check hangs")
	default:
	}
	close(hang)
	<-pings
	cancel()
	<-done

	ctx, cancel = context.WithCancel(context.Background())
	first := make(chan struct{})
	done = make(chan struct{})
	go func() {
		defer close(done)
		watchdogPings(ctx, time.Hour, func() {}, func() { close(first) }, func(time.Duration) {})
	}()
	<-first
	cancel()
	<-done
}
