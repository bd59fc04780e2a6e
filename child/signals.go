package child

import (
	"os"
	"os/signal"
	"syscall"
)

// signals are the signals that start a Server's drain. Serve catches them,
// before it accepts, and nothing catches them earlier: until then a signal
// does what it does with nothing caught, so SIGTERM or Ctrl-C during a
// long start-up ends the process at once, and a program that catches the
// signal itself gets it, once.
//
// The Go runtime's first signal.Notify in a process starts the thread that
// keeps the signal mask, which made Serve's registration cost 0.2 to
// 0.3 ms between the end of the application's start-up and the first
// accept(2) on a loaded machine. New makes that first call in the
// background, for SIGPIPE, while the application starts up; Serve's own
// registration then waits only for that thread (BENCH.md, "A sixth
// look"). Catching the drain's signals in New instead, and raising a
// signal that came before Serve again, was tried and undone: the signal
// raised again reached a program's own catch a second time, and ended a
// program that had stopped catching it in between.
type signals struct {
	list  []os.Signal
	ready chan struct{} // closed once SIGPIPE is caught: the runtime's signal thread runs
}

// prepareSignals starts the runtime's signal thread in the background,
// for Serve to catch list.
func prepareSignals(list []os.Signal) *signals {
	s := &signals{list: list, ready: make(chan struct{})}
	go func() {
		// A broken stdout or stderr (the supervisor died) must not kill
		// the process in the middle of its drain: with SIGPIPE delivered
		// to a channel, writes fail with EPIPE instead. Unlike
		// signal.Ignore, this leaves SIGPIPE's default in place for
		// programs this process execs.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
		close(s.ready)
	}()
	return s
}

// catch catches the drain's signals for Serve, which calls stop when it
// returns.
func (s *signals) catch() (c <-chan os.Signal, stop func()) {
	<-s.ready
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, s.list...)
	return ch, func() { signal.Stop(ch) }
}
