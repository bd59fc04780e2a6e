package supervisor

import (
	"errors"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
)

// A generation's exit is awaited in the network poller, not in a system
// call that would keep a processor of the runtime's (and its monitor
// thread polling) for as long as the generation runs; the generation is
// left a zombie for its program to reap, with its exit status.
func TestAwaitExit_inThePollerLeavingTheZombie(t *testing.T) {
	cmd := proctest.Self("never-ready")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	done := make(chan error, 1)
	go func() { done <- awaitExit(cmd.Process.Pid) }()

	waitState(t, "supervisor.awaitExit(", "IO wait") // the poller, not a blocking system call
	select {
	case err := <-done:
		t.Fatalf("awaitExit returned %v while the process runs", err)
	default:
	}

	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("awaitExit: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("awaitExit did not return after the process exited")
	}
	// Still a zombie: its exit status is there to be reaped.
	cmd.Wait()
	reaped = true
	if st := cmd.ProcessState; st == nil || st.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("reaping after awaitExit: state %v, want killed by SIGKILL", st)
	}

	// A process that is not baton's child.
	if err := awaitExit(cmd.Process.Pid); !errors.Is(err, syscall.ECHILD) {
		t.Errorf("awaitExit of a reaped pid: %v, want ECHILD", err)
	}
}

// goroutineState matches the header of a goroutine in a stack dump.
var goroutineState = regexp.MustCompile(`^goroutine \d+ \[([^,\]]+)`)

// waitState waits until a goroutine whose stack holds frame is in state
// ("IO wait", "syscall", "chan receive" …, as a stack dump names it), and
// fails the test with the states it saw if none is after waitLong.
func waitState(t *testing.T, frame, state string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	buf := make([]byte, 1<<20)
	seen := map[string]bool{}
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if !strings.Contains(g, frame) {
				continue
			}
			if m := goroutineState.FindStringSubmatch(g); m != nil {
				if m[1] == state {
					return
				}
				seen[m[1]] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s was in state %q after %v; states seen: %v", frame, state, waitLong, seen)
		}
		runtime.Gosched() // polling the scheduler's view, not synchronising
	}
}

// While a generation runs, the goroutine that waits for its exit waits
// in the poller too.
func TestReap_waitsInThePoller(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	waitState(t, "supervisor.reap(", "IO wait")
	h.stop()
}
