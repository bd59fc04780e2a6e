package supervisor

import (
	"os/exec"
	"runtime"
	"syscall"

	"github.com/baton-run/baton/internal/reaper"
	"golang.org/x/sys/unix"
)

// spawner starts every child from one goroutine locked to its OS thread,
// and execs baton's upgrade from that same thread.
//
// The parent-death signal (Pdeathsig) is sent when the thread that forked
// the child exits, not the process (golang/go#27505). Go destroys a thread
// when a goroutine locked to it returns, which any library may do, so a
// child forked from an arbitrary thread could be told that baton died
// while baton runs on. This thread lives as long as the supervisor.
//
// An exec is an exit for every thread but the one that calls it: the
// kernel ends the others, and each child forked by one of them gets its
// parent-death signal, although the process lives on with the same pid
// (checked on Linux 6.18: a child forked by another thread than the one
// that execs gets its signal; one forked by the exec'ing thread does
// not, and is the new image's child). So baton upgrade execs from the
// thread that forked every generation, which becomes the main thread of
// the new image, and the new image must fork from its main thread in
// turn: Run serves the spawner on the calling goroutine when that runs on
// the process's main thread (cmd/baton locks its main goroutine there in
// an init function), and upgrades are refused otherwise once baton was
// upgraded.
type spawner struct {
	reqs chan func()
	done chan struct{}
	main bool // its thread is the process's main thread
}

// newSpawner starts a spawner on a thread of its own.
func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Unlock before returning, so the thread goes back to the pool
		// instead of being destroyed.
		defer runtime.UnlockOSThread()
		s.serve()
	}()
	return s
}

// lockMainThread locks the calling goroutine to its thread and reports
// whether that is the process's main thread; if it is not, the goroutine
// is unlocked again.
func lockMainThread() bool {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		return true
	}
	runtime.UnlockOSThread()
	return false
}

// newMainSpawner returns a spawner whose caller serves it on the main
// thread, locked by lockMainThread.
func newMainSpawner() *spawner {
	return &spawner{reqs: make(chan func()), done: make(chan struct{}), main: true}
}

// serve runs the requests on the calling goroutine's thread until close.
func (s *spawner) serve() {
	defer close(s.done)
	for f := range s.reqs {
		f()
	}
}

func (s *spawner) start(cmd *exec.Cmd) error {
	err := make(chan error, 1)
	s.reqs <- func() { err <- reaper.Start(cmd) }
	return <-err
}

// exec replaces the process image from the spawner's thread. It returns
// only when the exec failed.
func (s *spawner) exec(path string, argv, env []string) error {
	err := make(chan error, 1)
	s.reqs <- func() { err <- syscall.Exec(path, argv, env) }
	return <-err
}

// close ends the spawner; call it after every child was reaped.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}
