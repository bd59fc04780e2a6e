package supervisor

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
)

// A program in another language that only uses LISTEN_FDS (checking
// LISTEN_PID) and systemd-notify --ready is supervised and handed over:
// the exec shim sets LISTEN_PID, and the notify socket accepts the
// message systemd-notify sends from its own pid, with the file descriptor
// it attaches for BARRIER=1.
func TestForeignProgram_listenFdsAndSystemdNotify(t *testing.T) {
	cc := proctest.RequireTool(t, "cc")
	proctest.RequireTool(t, "systemd-notify")
	bin := filepath.Join(t.TempDir(), "sdserver")
	if out, err := exec.Command(cc, "-O1", "-o", bin, "testdata/sdserver.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	cfg := fmt.Sprintf(`
program "c" {
  command = [%q]
  listener "http" { address = "127.0.0.1:0" }
  ready { timeout = "20s" }
  stop  { timeout = "10s" }
}
`, bin)
	h := newHarness(t, cfg)
	h.waitEvent("c", "ready", 1)
	addr := h.sup.Addr("c", "http")
	first := h.status("c")
	if pid := get(t, addr); pid != first.PID {
		t.Fatalf("pid %d answered, want %d", pid, first.PID)
	}
	if first.Status != "serving from C" {
		t.Fatalf("STATUS: want %q, have %q", "serving from C", first.Status)
	}
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("c", "exit", 1)
	st := h.status("c")
	if st.Generation != 2 || st.LastExit.Code != 0 || get(t, addr) != st.PID {
		t.Fatalf("want gen 2 serving and gen 1 exited 0, have %+v, last exit %+v", st, st.LastExit)
	}
	if !strings.Contains(h.log.String(), "sdserver: stopped") {
		t.Fatal("gen 1 did not stop on SIGTERM")
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}
