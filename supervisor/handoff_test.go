package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/handoff"
)

// keptConn is a client's keep-alive connection, driven by hand so that
// nothing reconnects behind the test's back.
type keptConn struct {
	net.Conn
	br *bufio.Reader
}

func keep(t *testing.T, addr string) *keptConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{c, bufio.NewReader(c)}
}

// get sends GET / and returns the pid that answered and whether it
// closes the connection.
func (c *keptConn) get(t *testing.T) (int, bool) {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitLong))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("GET on the kept connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("GET: %q", b)
	}
	return pid, resp.Close
}

// An idle keep-alive connection moves to the next generation: the old
// one exits without waiting for it, the client's next request on the
// same connection is answered by the new generation without
// "Connection: close", and after a second handover by the third: one
// connection, three pids.
func TestHandoff_idleConnectionMovesToTheNextGeneration(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	c := keep(t, h.sup.Addr("app", "http"))
	var pids []int
	for gen := 1; gen <= 3; gen++ {
		pid, closing := c.get(t)
		if st := h.status("app"); pid != st.PID || st.Generation != gen || closing {
			t.Fatalf("gen %d: the kept connection was answered by pid %d (close %v); gen %d serves as pid %d", gen, pid, closing, st.Generation, st.PID)
		}
		pids = append(pids, pid)
		if gen == 3 {
			break
		}
		if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
			t.Fatal(err)
		}
		h.waitEvent("app", "exit", gen)
		if last := h.status("app").LastExit; last.Code != 0 {
			t.Fatalf("gen %d: want exit 0, have %+v", gen, last)
		}
	}
	h.waitLog("idle connections handed over", 1)
	if !strings.Contains(h.log.String(), "moved=1") {
		t.Fatalf("want the drain's log to say one connection moved; log:\n%s", h.log)
	}
	c.Close() // a final stop has no successor: it would wait for it
	h.stop()
}

// A new generation that dies after it received connections does not
// strand them: the kernel closes what a dead process held, in its hands
// or still in its socket's queue, and the client sees its idle
// connection close, as when a server crashes.
func TestHandoff_newGenerationDiesAfterReceiving(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `restart { policy = "never" }`))
	h.waitEvent("app", "ready", 1)
	c := keep(t, h.sup.Addr("app", "http"))
	c.get(t)
	h.write(fakeProgram("app", "handoff-sink", `restart { policy = "never" }`))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	h.waitLog("fake: holding a connection", 1)
	syscall.Kill(h.status("app").PID, syscall.SIGKILL)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if n, err := c.br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed when its new owner died, have %d bytes, %v", n, err)
	}
	h.stop()
}

// stop { move_idle = false }: the generations get no handoff socket, and
// an idle connection stays with the old generation until its drain
// closes it, as before.
func TestHandoff_switchedOff(t *testing.T) {
	h := newHarness(t, fakeProgram("app", "serve", `stop {
    timeout   = "3s"
    move_idle = false
  }`))
	h.waitEvent("app", "ready", 1)
	addr := h.sup.Addr("app", "http")
	env := getBody(t, "http://"+addr+"/env")
	if strings.Contains(env, handoff.EnvFD) {
		t.Fatalf("move_idle = false, and the generation got %s:\n%s", handoff.EnvFD, env)
	}
	c := keep(t, addr)
	c.get(t)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "exit", 1)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if n, err := c.br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("want the idle connection closed by the old generation's drain, read %d bytes", n)
	}
	h.stop()
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprint(string(b))
}
