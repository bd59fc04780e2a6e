package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/fakes"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/control"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	proctest.RunChild(fakes.Children)
	goleak.VerifyTestMain(m)
}

const waitLong = 30 * time.Second

// harness runs a Supervisor in the test process on a config file it
// writes, with the log captured.
type harness struct {
	t      *testing.T
	dir    string
	file   string
	sup    *Supervisor
	log    *proctest.Buffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
	events *proctest.Buffer // "program what gen" lines
}

// fakeProgram returns a program block that runs fake child name.
func fakeProgram(name, fake, extra string) string { return fakes.Program(name, fake, extra) }

func newHarness(t *testing.T, config string) *harness {
	t.Helper()
	return newHarnessWith(t, config, Config{})
}

// newHarnessWith runs a Supervisor with cfg (File and Logger are set).
func newHarnessWith(t *testing.T, config string, cfg Config) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, file: filepath.Join(dir, "config.hcl"), log: proctest.NewBuffer(), events: proctest.NewBuffer()}
	h.write(config)
	logger := hclog.New(&hclog.LoggerOptions{Name: "baton", Level: hclog.Debug, Output: io.MultiWriter(h.log, testWriter{t})})
	cfg.File, cfg.Logger = h.file, logger
	sup, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.sup = sup
	sup.Observe(func(e Event) { fmt.Fprintf(h.events, "%s %s %d\n", e.Program, e.What, e.Generation) })
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan struct{})
	go func() {
		h.err = sup.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			sup.Kill()
			<-h.done
		}
		if strings.Contains(h.log.String(), "illegal phase transition") {
			t.Errorf("a program made a move its phase does not allow; log:\n%s", h.log)
		}
	})
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (h *harness) write(config string) {
	h.t.Helper()
	if err := os.WriteFile(h.file, []byte(config), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// waitEvent waits for program's generation gen to report what.
func (h *harness) waitEvent(program, what string, gen int) {
	h.t.Helper()
	if _, ok := h.events.Wait(fmt.Sprintf("%s %s %d\n", program, what, gen), 1, waitLong); !ok {
		h.t.Fatalf("no %s event for %s gen %d; log:\n%s", what, program, gen, h.log)
	}
}

// waitLog waits until the log holds substr n times.
func (h *harness) waitLog(substr string, n int) string {
	h.t.Helper()
	line, ok := h.log.Wait(substr, n, waitLong)
	if !ok {
		h.t.Fatalf("waited for %q (×%d) in the log:\n%s", substr, n, h.log)
	}
	return line
}

func (h *harness) status(program string) control.ProgramStatus {
	h.t.Helper()
	for _, st := range h.sup.Status() {
		if st.Name == program {
			return st
		}
	}
	h.t.Fatalf("no program %q in the status", program)
	return control.ProgramStatus{}
}

// stop stops the supervisor gracefully and returns Run's result.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case <-h.done:
		return h.err
	case <-time.After(2 * waitLong):
		h.t.Fatalf("Run did not return; log:\n%s", h.log)
		return nil
	}
}

// get asks addr's "/" for the pid of the generation that answers.
func get(t *testing.T, addr string) int { return proctest.ServedBy(t, addr) }

// gone reports whether no process is left in pid's process group.
func gone(pid int) bool {
	return syscall.Kill(-pid, 0) == syscall.ESRCH
}

// dialKeepAlive opens a connection, sends one request and keeps the
// connection open and idle.
func dialKeepAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatal(err)
	}
	return c
}
