package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

// An editor-style save of the config file (write a temporary file, rename
// it over) is applied; a save with a syntax error changes nothing and the
// log names the line.
func TestWatch_configSaveApplied(t *testing.T) {
	h := newHarness(t, `watch { debounce = "50ms" }`+fakeProgram("app", "serve", ""))
	h.waitEvent("app", "ready", 1)
	first := h.status("app").PID

	// Unchanged programs stay untouched; a new one starts.
	proctest.Replace(t, h.file, `watch { debounce = "50ms" }`+fakeProgram("app", "serve", "")+fakeProgram("other", "serve", ""))
	h.waitEvent("other", "ready", 1)
	if st := h.status("app"); st.PID != first || st.Generation != 1 {
		t.Fatalf("an unchanged program was handed over: %+v", st)
	}

	// A changed program is handed over; a removed one stops.
	changed := strings.Replace(fakeProgram("app", "serve", ""), `BATON_TEST_CHILD = "serve"`, `BATON_TEST_CHILD = "serve", MODE = "2"`, 1)
	proctest.Replace(t, h.file, `watch { debounce = "50ms" }`+changed)
	h.waitEvent("app", "ready", 2)
	h.waitEvent("other", "exit", 1)

	proctest.Replace(t, h.file, `watch { debounce = "50ms" }`+changed+"\nprogram \"broken\" {\n")
	h.waitLog("config not applied", 1)
	line := h.waitLog("Unclosed configuration block", 1)
	if !strings.Contains(line, "config.hcl:9,18-19") {
		t.Fatalf("the log does not name the line: %s", line)
	}
	if st := h.status("app"); st.Generation != 2 {
		t.Fatalf("the broken config changed something: %+v", st)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// baton dev: a change during a build cancels it and builds once more; a
// failed build leaves the serving generation serving and shows the
// compiler's output; the console has one line per cycle.
func TestDev_changeDuringBuildCancelsIt(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main"), 0o644)
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	argv, _ := proctest.SelfArgv("")
	build := func(extraEnv string) string {
		return fmt.Sprintf(`
watch { debounce = "50ms" }
program "app" {
  command = ["./bin/app"]
  listener "http" { address = "127.0.0.1:0" }
  build {
    command = [%q, %q, "{output}"]
    env     = { BATON_TEST_CHILD = "fake-build", FAKE_GATE = %q %s }
    watch   = [%q]
  }
}
`, argv[0], argv[1], gate, extraEnv, src)
	}
	console := proctest.NewBuffer()
	h := newHarnessWith(t, build(""), Config{Dev: true, Console: console})
	open := func() {
		f, err := os.OpenFile(gate, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{1})
		f.Close()
	}
	open() // the first build
	h.waitEvent("app", "ready", 1)

	os.WriteFile(filepath.Join(src, "a.go"), []byte("package main"), 0o644)
	h.waitLog("building: program=app command=", 2) // build 2 waits at the gate
	os.WriteFile(filepath.Join(src, "b.go"), []byte("package main"), 0o644)
	h.waitLog("build cancelled by a newer change", 1)
	h.waitLog("building: program=app command=", 3)
	open()
	h.waitEvent("app", "ready", 2)
	line, ok := console.Wait("gen 2 serving", 1, waitLong)
	if !ok || !strings.Contains(line, "src/a.go, ") || !strings.Contains(line, "src/b.go changed · built in") {
		t.Fatalf("cycle line: %q\nconsole:\n%s", line, console)
	}
	if n := console.Count("serving"); n != 2 {
		t.Fatalf("want 2 handovers (start, then one for both changes), have %d:\n%s", n, console)
	}

	// A failed build: the compiler's words, and gen 2 keeps serving.
	proctest.Replace(t, h.file, build(`, FAKE_FAIL = "1"`))
	open()
	line, ok = console.Wait("build failed", 1, waitLong)
	_, detail := console.Wait("main.go:3:1: syntax error", 1, waitLong)
	if !ok || !strings.Contains(line, "gen 2 keeps serving") || !detail {
		t.Fatalf("failed build: %q\nconsole:\n%s", line, console)
	}
	if st := h.status("app"); st.Generation != 2 || st.State != control.StateRunning {
		t.Fatalf("after the failed build: %+v", st)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, config.DefaultBuildDir)); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dir, config.DefaultBuildDir, "app"))
		if len(entries) > 0 {
			t.Fatalf("build outputs left behind: %v", entries)
		}
	}
}

// baton dev: a program removed from the config takes its builder with it,
// and its binaries are removed then, not when baton stops.
func TestDev_removedProgramStopsItsBuilder(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	argv, _ := proctest.SelfArgv("")
	dev := fmt.Sprintf(`
watch { debounce = "50ms" }
program "app" {
  command = ["./bin/app"]
  listener "http" { address = "127.0.0.1:0" }
  build {
    command = [%q, %q, "{output}"]
    env     = { BATON_TEST_CHILD = "fake-build" }
    watch   = [%q]
  }
}
`, argv[0], argv[1], src)
	h := newHarnessWith(t, dev+fakeProgram("other", "serve", ""), Config{Dev: true})
	h.waitEvent("app", "ready", 1)
	h.waitEvent("other", "ready", 1)
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	h.write(`watch { debounce = "50ms" }` + fakeProgram("other", "serve", ""))
	if _, err := h.sup.Reload(context.Background(), ReloadRequest{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	h.waitLog("builder stopped; its binaries were removed: program=app", 1)
	builds := filepath.Join(dir, config.DefaultBuildDir, "app")
	if entries, err := os.ReadDir(builds); err == nil && len(entries) > 0 {
		t.Fatalf("the removed program's builds are left: %v", entries)
	}
	h.stop()
}
