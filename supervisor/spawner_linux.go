package supervisor

import (
	"os/exec"
	"runtime"

	"github.com/baton-run/baton/internal/reaper"
)

// spawner starts every child from one goroutine locked to its OS thread.
//
// The parent-death signal (Pdeathsig) is sent when the thread that forked
// the child exits, not the process (golang/go#27505). Go destroys a thread
// when a goroutine locked to it returns, which any library may do, so a
// child forked from an arbitrary thread could be told that baton died
// while baton runs on. This thread lives as long as the supervisor.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd   *exec.Cmd
	start func(*exec.Cmd) error
	err   chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		defer close(s.done)
		// Unlock before returning, so the thread goes back to the pool
		// instead of being destroyed.
		defer runtime.UnlockOSThread()
		for r := range s.reqs {
			r.err <- r.start(r.cmd)
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, start: reaper.Start, err: make(chan error, 1)}
	s.reqs <- r
	return <-r.err
}

// close ends the spawner; call it after every child was reaped.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}
