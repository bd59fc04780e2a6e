package child

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// A Task is background work tracked by a Server: it starts with Go or
// Start, and the drain waits for it after HTTP has drained.
type Task struct {
	// Name identifies the task in logs and in DrainError.
	Name string
	// Run does the work. Its context is cancelled when the server has
	// drained HTTP: Run should then finish what it holds and return.
	// FlushContext(ctx) gives a context for that final work that lasts
	// until the task deadline.
	Run func(ctx context.Context) error
	// Pending, optional, reports how many units of work the task holds
	// that are not done yet; a drain cut off by the task deadline logs it.
	Pending func() int
}

// Go starts run as a tracked background task called name. It returns
// ErrClosed once the drain has closed the door to new background work.
//
// A task that returns an error before the drain began makes the server
// drain and Serve return that error: work the server acknowledged may
// depend on it.
func (s *Server) Go(name string, run func(ctx context.Context) error) error {
	return s.StartTask(Task{Name: name, Run: run})
}

// StartTask starts t as a tracked background task, like Go.
func (s *Server) StartTask(t Task) error {
	return s.tasks.start(t, s)
}

// FlushContext returns the context that a task's final work should use
// once its own context ctx was cancelled: it is cancelled at the task
// deadline of the drain. Outside a Server task it returns
// context.WithoutCancel(ctx).
func FlushContext(ctx context.Context) context.Context {
	if hard, ok := ctx.Value(flushKey{}).(context.Context); ok {
		return hard
	}
	return context.WithoutCancel(ctx)
}

type flushKey struct{}

type taskGroup struct {
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
	live    map[*Task]struct{}
	soft    context.Context // cancelled when HTTP has drained
	stopAll context.CancelFunc
	hard    context.Context // cancelled at the task deadline
	stopNow context.CancelFunc
	failed  chan error // the first task that failed while serving
}

func (g *taskGroup) init() {
	g.live = make(map[*Task]struct{})
	g.hard, g.stopNow = context.WithCancel(context.Background())
	soft, cancel := context.WithCancel(g.hard)
	g.soft, g.stopAll = context.WithValue(soft, flushKey{}, g.hard), cancel
	g.failed = make(chan error, 1)
}

func (g *taskGroup) start(t Task, s *Server) error {
	if t.Run == nil {
		return fmt.Errorf("child: task %q has no Run function", t.Name)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	// Add before the go statement and never after Wait began: the door
	// is checked and Add done under the same lock that stop takes.
	g.wg.Add(1)
	tp := &t
	g.live[tp] = struct{}{}
	g.mu.Unlock()

	go func() {
		defer g.wg.Done()
		err := t.Run(g.soft)
		g.mu.Lock()
		delete(g.live, tp)
		stopping := g.closed
		g.mu.Unlock()
		switch {
		case err != nil && !stopping:
			select {
			case g.failed <- fmt.Errorf("child: task %s: %w", t.Name, err):
			default:
			}
		case err != nil:
			s.log.Error("background task failed while stopping", "task", t.Name, "error", err)
		}
	}()
	return nil
}

func (g *taskGroup) running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.live)
}

// stop closes the door, cancels the tasks' context and waits for them up
// to timeout. It returns the tasks still running at the deadline, sorted,
// and the work they reported pending.
func (g *taskGroup) stop(timeout time.Duration) (abandoned []string, pending int) {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.stopAll()

	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		g.stopNow()
		return nil, 0
	case <-t.C:
	}
	g.mu.Lock()
	for tp := range g.live {
		abandoned = append(abandoned, tp.Name)
		if tp.Pending != nil {
			pending += tp.Pending()
		}
	}
	g.mu.Unlock()
	g.stopNow()
	sort.Strings(abandoned)
	return abandoned, pending
}
