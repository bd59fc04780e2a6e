package supervisor

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/protocol"
)

// baton's own watchdog is systemd's WATCHDOG_USEC when WATCHDOG_PID is
// unset or names baton, as sd_watchdog_enabled(3) reads it, and neither
// variable is left for the programs.
func TestWatchdogFromEnv(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"200000", "", 200 * time.Millisecond},
		{"200000", strconv.Itoa(os.Getpid()), 200 * time.Millisecond},
		{"200000", "1", 0}, // another process's watchdog
		{"", "", 0},
		{"x", "", 0},
		{"-5", "", 0},
	} {
		t.Setenv(protocol.EnvWatchdogUsec, tc.usec)
		t.Setenv(protocol.EnvWatchdogPID, tc.pid)
		if got := watchdogFromEnv(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: want %v, have %v", tc.usec, tc.pid, tc.want, got)
		}
		for _, k := range []string{protocol.EnvWatchdogUsec, protocol.EnvWatchdogPID} {
			if _, set := os.LookupEnv(k); set {
				t.Errorf("%s is still set", k)
			}
		}
	}
}

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
