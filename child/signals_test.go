package child

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
)

func init() {
	// start-up-forever: New, then a start-up that never ends.
	fakeChildren["start-up-forever"] = func() int {
		s, err := New(Config{Addr: "127.0.0.1:0"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		<-s.sigs.ready // New's part is done: the signal under test comes after it
		fmt.Println("starting up")
		select {} // a start-up that never ends: only a signal ends the process
	}
	// catch-then-serve: New, then the program catches SIGTERM itself
	// during its start-up and serves once it had it.
	fakeChildren["catch-then-serve"] = func() int {
		s, err := New(Config{Addr: "127.0.0.1:0"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		own := make(chan os.Signal, 1)
		signal.Notify(own, syscall.SIGTERM)
		<-s.sigs.ready
		fmt.Println("starting up")
		fmt.Println("program caught", <-own)
		signal.Stop(own)
		return ExitCode(s.Serve(context.Background(), http.NotFoundHandler()))
	}
	// two-servers: one Server serves with a lame duck, another is made
	// and never served; the process ends when the first Serve returns.
	fakeChildren["two-servers"] = func() int {
		a, err := New(Config{Addr: "127.0.0.1:0", LameDuck: 300 * time.Millisecond})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		b, err := New(Config{Addr: "127.0.0.1:0"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		<-b.sigs.ready
		go func() {
			err := a.Serve(context.Background(), http.NotFoundHandler())
			fmt.Println("first server done:", err)
			os.Exit(ExitCode(err))
		}()
		<-a.ready
		fmt.Println("first server ready")
		select {} // the first Serve's goroutine ends the process
	}
}

// Nothing catches the drain's signals before Serve: SIGTERM during the
// start-up, after New, ends the process at once, by the signal.
func TestSignals_beforeServeEndTheProcess(t *testing.T) {
	p := proctest.Start(t, proctest.Self("start-up-forever"))
	p.WaitOutput("starting up", 30*time.Second)
	p.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(p.Wait(30 * time.Second)); sig != syscall.SIGTERM.String() {
		t.Fatalf("want the process ended by SIGTERM, have exit code %d, signal %q; output:\n%s", code, sig, p.Output())
	}
}

// A program that catches the signal itself before Serve gets it, and only
// it: the program goes on, stops catching, and Serve drains on the next
// one. (A signal raised again by the child, as it once did, could come
// after the program stopped catching and end the process.)
func TestSignals_caughtByTheProgramBeforeServe(t *testing.T) {
	p := proctest.Start(t, proctest.Self("catch-then-serve"))
	p.WaitOutput("starting up", 30*time.Second)
	p.Signal(syscall.SIGTERM)
	p.WaitOutput("program caught terminated", 30*time.Second)
	p.WaitOutput("serving", 30*time.Second)
	p.Signal(syscall.SIGTERM)
	if code, sig := proctest.ExitCode(p.Wait(30 * time.Second)); code != 0 {
		t.Fatalf("want a drain and exit 0 on the second SIGTERM, have exit code %d, signal %q; output:\n%s", code, sig, p.Output())
	}
}

// With one Server serving and another made but never served, a signal is
// the serving one's alone: its lame duck runs in full and the process
// exits 0.
func TestSignals_anotherServerServing(t *testing.T) {
	p := proctest.Start(t, proctest.Self("two-servers"))
	p.WaitOutput("first server ready", 30*time.Second)
	p.Signal(syscall.SIGTERM)
	st := p.Wait(30 * time.Second)
	if code, sig := proctest.ExitCode(st); code != 0 || strings.Contains(p.Output(), "lame duck cut short") {
		t.Fatalf("want the lame duck in full and exit 0, have exit code %d, signal %q; output:\n%s", code, sig, p.Output())
	}
}

// unserved releases what New took for a Server that a test never serves.
func unserved(s *Server) {
	s.ln.Close()
	<-s.sigs.ready
}
