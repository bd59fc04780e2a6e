package child

import (
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
)

// signals are the signals that start a Server's drain. New has them
// registered in the background, while the application starts up, not
// Serve: each signal.Notify waits for the Go runtime's signal-mask
// thread, which costs a few hundred microseconds on a loaded machine,
// and done in Serve (or in New) that wait came before the first
// accept(2) (BENCH.md, "A fifth look").
//
// Until Serve takes them, a signal does what it did with nothing caught:
// the catch is undone and the signal raised again, so that SIGTERM or
// Ctrl-C during a long start-up still ends the process at once, and a
// program that catches the signal itself still gets it. Serve registers
// again after such a signal.
type signals struct {
	c          chan os.Signal
	list       []os.Signal
	registered chan struct{} // closed once c is registered
	take       chan struct{} // closed by Serve

	mu     sync.Mutex
	served bool // Serve took the signals
	undone bool // a signal came first: c is no longer registered
}

// servingServers counts the Servers of this process in Serve: a signal
// they catch is theirs to drain on, and an earlier Server must not
// raise it again (see early).
var servingServers atomic.Int32

// catchSignals has list caught in the background. Until then a signal
// does what it does with nothing caught.
func catchSignals(list []os.Signal) *signals {
	s := &signals{c: make(chan os.Signal, 1), list: list, registered: make(chan struct{}), take: make(chan struct{})}
	go s.early()
	return s
}

// early registers the signals and handles one that comes before Serve.
func (s *signals) early() {
	// A broken stdout or stderr (the supervisor died) must not kill the
	// process in the middle of its drain: with SIGPIPE delivered to a
	// channel, writes fail with EPIPE instead. Unlike signal.Ignore, this
	// leaves SIGPIPE's default in place for programs this process execs.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	signal.Notify(s.c, s.list...)
	close(s.registered)
	var sig os.Signal
	select {
	case <-s.take:
		return
	case sig = <-s.c:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served {
		// Serve took over meanwhile: the signal is its to drain on.
		select {
		case s.c <- sig:
		default:
		}
		return
	}
	signal.Stop(s.c)
	s.undone = true
	if ss, ok := sig.(syscall.Signal); ok && servingServers.Load() == 0 {
		// With no other catch, the runtime's default ends the process.
		syscall.Kill(os.Getpid(), ss)
	}
}

// serve hands the signals to Serve, which calls done when it returns.
func (s *signals) serve() (c <-chan os.Signal, done func()) {
	<-s.registered
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = true
	close(s.take)
	if s.undone {
		signal.Notify(s.c, s.list...)
	}
	servingServers.Add(1)
	return s.c, func() {
		signal.Stop(s.c)
		servingServers.Add(-1)
	}
}
