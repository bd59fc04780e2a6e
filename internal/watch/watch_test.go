package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

// fires records a target's fire calls.
type fires struct {
	mu    sync.Mutex
	calls [][]string
	buf   *proctest.Buffer // a line per call, to wait on
}

func newFires() *fires { return &fires{buf: proctest.NewBuffer()} }

func (f *fires) fire(changed []string) {
	f.mu.Lock()
	f.calls = append(f.calls, changed)
	n := len(f.calls)
	f.mu.Unlock()
	fmt.Fprintf(f.buf, "fire %d %s\n", n, strings.Join(changed, ","))
}

func (f *fires) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fires) wait(t *testing.T, n int) []string {
	t.Helper()
	if _, ok := f.buf.Wait(fmt.Sprintf("fire %d ", n), 1, waitLong); !ok {
		t.Fatalf("fire %d did not happen; fires: %s", n, f.buf)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[n-1]
}

func watchLogger(t *testing.T) (hclog.Logger, *proctest.Buffer) {
	buf := proctest.NewBuffer()
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: buf}), buf
}

const waitLong = 30 * time.Second

func forModes(t *testing.T, f func(t *testing.T, poll time.Duration)) {
	t.Run("fsnotify", func(t *testing.T) { f(t, 0) })
	t.Run("poll", func(t *testing.T) { f(t, 20*time.Millisecond) })
}

// A file target fires once per burst of replacements, and only for new
// Content: the same bytes again, or a chmod, fire nothing.
func TestWatch_fileContent(t *testing.T) {
	forModes(t, func(t *testing.T, poll time.Duration) {
		dir := t.TempDir()
		bin := filepath.Join(dir, "app")
		proctest.Replace(t, bin, "v1")
		log, logBuf := watchLogger(t)
		w := New(log, poll)
		defer w.Close()
		f := newFires()
		<-w.Set([]*Target{{Path: bin, Content: true, Debounce: 300 * time.Millisecond, Fire: f.fire}})

		for i := 0; i < 50; i++ { // a burst: one fire, for the last content
			proctest.Replace(t, bin, fmt.Sprintf("v2-%d", i))
		}
		if got := f.wait(t, 1); len(got) != 1 || got[0] != bin {
			t.Fatalf("fire: want [%s], have %v", bin, got)
		}
		proctest.Replace(t, bin, "v2-49") // same bytes
		if _, ok := logBuf.Wait("same content as before", 1, waitLong); !ok {
			t.Fatalf("the same bytes were not noticed:\n%s", logBuf)
		}
		if poll == 0 {
			os.Chmod(bin, 0o700)
			if _, ok := logBuf.Wait("chmod only", 1, waitLong); !ok {
				t.Fatalf("the chmod was not noticed:\n%s", logBuf)
			}
		}
		proctest.Replace(t, bin, "v3")
		f.wait(t, 2)
		if n := f.count(); n != 2 {
			t.Fatalf("want 2 fires (the burst, v3), have %d", n)
		}
	})
}

// A tree target sees files in new directories (created before their watch
// was added), filters by include and exclude, and skips .git and friends.
func TestWatch_tree(t *testing.T) {
	forModes(t, func(t *testing.T, poll time.Duration) {
		root := t.TempDir()
		for _, d := range []string{"pkg", ".git", "node_modules", "testdata"} {
			os.MkdirAll(filepath.Join(root, d), 0o755)
		}
		w := New(hclog.NewNullLogger(), poll)
		defer w.Close()
		f := newFires()
		<-w.Set([]*Target{{Path: root, Tree: true, Include: []string{"*.go", "go.mod"}, Exclude: []string{"*_test.go", "testdata"},
			Debounce: 100 * time.Millisecond, Fire: f.fire}})

		for _, p := range []string{".git/HEAD.go", "node_modules/x.go", "testdata/y.go", "pkg/a_test.go", "pkg/notes.txt"} {
			os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644)
		}
		os.MkdirAll(filepath.Join(root, "pkg/new/deeper"), 0o755)
		os.WriteFile(filepath.Join(root, "pkg/new/deeper/b.go"), []byte("package deeper"), 0o644)
		got := f.wait(t, 1)
		sort.Strings(got)
		if len(got) != 1 || got[0] != filepath.Join(root, "pkg/new/deeper/b.go") {
			t.Fatalf("want only pkg/new/deeper/b.go, have %v", got)
		}
		// The new directory is watched now.
		os.WriteFile(filepath.Join(root, "pkg/new/deeper/c.go"), []byte("package deeper"), 0o644)
		if got := f.wait(t, 2); len(got) != 1 || !strings.HasSuffix(got[0], "c.go") {
			t.Fatalf("want c.go, have %v", got)
		}
	})
}

// A watched directory that is removed and created again is watched again.
func TestWatch_directoryRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "bin")
	os.MkdirAll(dir, 0o755)
	bin := filepath.Join(dir, "app")
	proctest.Replace(t, bin, "v1")
	w := New(hclog.NewNullLogger(), 0)
	defer w.Close()
	f := newFires()
	<-w.Set([]*Target{{Path: bin, Content: true, Debounce: 50 * time.Millisecond, Fire: f.fire}})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir, 0o755)
	proctest.Replace(t, bin, "v2")
	f.wait(t, 1)
	proctest.Replace(t, bin, "v3")
	f.wait(t, 2)
}

// A file that does not exist yet (a binary before its first deploy) is
// noticed when it appears.
func TestWatch_fileAppears(t *testing.T) {
	parent := t.TempDir()
	bin := filepath.Join(parent, "bin", "app")
	w := New(hclog.NewNullLogger(), 0)
	defer w.Close()
	f := newFires()
	<-w.Set([]*Target{{Path: bin, Content: true, Debounce: 50 * time.Millisecond, Fire: f.fire}})
	os.MkdirAll(filepath.Dir(bin), 0o755)
	proctest.Replace(t, bin, "v1")
	f.wait(t, 1)
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		globs []string
		path  string
		want  bool
	}{
		{[]string{"*.go"}, "/r/a/b.go", true},
		{[]string{"*.go"}, "/r/a/b.txt", false},
		{[]string{"**/*.go"}, "/r/a/b.go", true},
		{[]string{"a/*.go"}, "/r/a/b.go", true},
		{[]string{"a/*.go"}, "/r/c/a/b.go", false},
		{[]string{"web/*.tmpl", "*.go"}, "/r/web/x.tmpl", true},
	} {
		if got := globMatch(tc.globs, "/r", tc.path); got != tc.want {
			t.Errorf("globMatch(%q, %s): want %v, have %v", tc.globs, tc.path, tc.want, got)
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
