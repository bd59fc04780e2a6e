package supervisor

import (
	"context"
	"strings"
	"testing"

	"github.com/baton-run/baton/supervisor/control"
)

// A program with after starts once what it names is there: here a
// one-shot migration that completed. A failed one-shot keeps it waiting,
// and says so in its status, until the one-shot is started again and
// completes.
func TestAfter_oneshotMigration(t *testing.T) {
	migrate := func(code string) string {
		return withEnv(fakeProgram("migrate", "oneshot", `type = "oneshot"`), "oneshot", `FAKE_EXIT = "`+code+`"`)
	}
	app := fakeProgram("app", "serve", `after = ["migrate"]`)
	h := newHarness(t, migrate("3")+app)
	h.waitLog("start order: program=app state=\"waiting for migrate (exited: failed: exit status 3)\"", 1)
	if st := h.status("app"); st.State != control.StateWaiting || !strings.Contains(st.Reason, "migrate (exited: failed: exit status 3)") {
		t.Fatalf("app does not say it waits for the failed migration: %+v", st)
	}
	if st := h.status("migrate"); st.State != control.StateExited || !strings.Contains(st.Reason, "failed") {
		t.Fatalf("migrate: %+v", st)
	}
	if strings.Contains(h.log.String(), "starting: program=app") {
		t.Fatal("app started after a failed migration")
	}

	h.write(migrate("0") + app)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Programs: []string{"migrate"}, Reason: "fixed", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("app", "ready", 1)
	log := h.log.String()
	if i, j := strings.Index(log, "one-shot completed: program=migrate"), strings.Index(log, "starting: program=app"); i < 0 || j < i {
		t.Fatalf("app started before the migration completed:\n%s", log)
	}
	st := h.status("app")
	if st.State != control.StateRunning || len(st.After) != 1 {
		t.Fatalf("app: %+v", st)
	}
	h.stop()
}

// A service starts after the services it names serve.
func TestAfter_service(t *testing.T) {
	h := newHarness(t, withEnv(fakeProgram("db", "late-ready", ""), "late-ready", `FAKE_DELAY = "200ms"`)+fakeProgram("app", "serve", `after = ["db"]`))
	h.waitEvent("app", "ready", 1)
	log := h.log.String()
	if i, j := strings.Index(log, "ready: program=db gen=1"), strings.Index(log, "starting: program=app"); i < 0 || j < i {
		t.Fatalf("app started before db served:\n%s", log)
	}
	h.stop()
}
