package supervisor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/go-hclog"
)

// JSON lines from a child keep their level and fields; other lines are
// logged at info as they are.
func TestReemit(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
	}{
		{`{"@level":"warn","@message":"disk almost full","@module":"app","@timestamp":"x","free":12}`, `[WARN]  t: disk almost full: free=12`},
		{`{"level":"ERROR","msg":"boom","time":"x","n":1000000}`, `[ERROR] t: boom: n=1000000`},
		{`{"level":"warning","message":"careful"}`, `[WARN]  t: careful`},
		{`{"level":"debug","msg":"hidden"}`, ``},
		{`{"no":"level"}`, `[INFO]  t: {"no":"level"}`},
		{`plain text`, `[INFO]  t: plain text`},
		{`{broken`, `[INFO]  t: {broken`},
	} {
		var buf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Name: "t", Output: &buf, Level: hclog.Info})
		reemit(log, []byte(tc.line))
		got := buf.String()
		if tc.want == "" {
			if got != "" {
				t.Errorf("%s: want nothing at info, have %q", tc.line, got)
			}
			continue
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: want %q, have %q", tc.line, tc.want, got)
		}
	}
}

// A line longer than maxLine is cut, and the ring keeps the last lines.
func TestPumpLinesAndTail(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	var lines []string
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.WriteString("a\r\nb\n" + long + "\nlast")
		w.Close()
	}()
	newPump(r, nil).run(func(l []byte) { lines = append(lines, string(l)) })
	if len(lines) != 5 || lines[0] != "a" || lines[1] != "b" || len(lines[2]) != maxLine || lines[4] != "last" {
		t.Fatalf("lines: %d, first %q", len(lines), lines[:2])
	}
	var tl tail
	for i := 0; i < tailLines+5; i++ {
		tl.add(strings.Repeat("l", i))
	}
	got := strings.Split(strings.TrimSpace(tl.String()), "\n")
	if len(got) != tailLines || len(got[0]) != 5 || len(got[tailLines-1]) != tailLines+4 {
		t.Fatalf("tail: %d lines, first %q", len(got), got[0])
	}
}

func TestRenderLine(t *testing.T) {
	for in, want := range map[string]string{
		`{"@level":"info","@message":"serving","@module":"orders","@timestamp":"x","addr":"127.0.0.1:8080"}`: `[INFO] serving addr=127.0.0.1:8080`,
		`{"level":"error","msg":"boom","n":3}`: `[ERROR] boom n=3`,
		`plain`:                                `plain`,
		`{"x":1}`:                              `{"x":1}`,
	} {
		if got := renderLine(in); got != want {
			t.Errorf("renderLine(%s): want %q, have %q", in, want, got)
		}
	}
}

// binaryHash reads a binary again only when it changed: in place, or
// replaced by another file.
func TestBinaryHash_cachedUntilTheFileChanges(t *testing.T) {
	path := t.TempDir() + "/bin"
	os.WriteFile(path, []byte("one"), 0o755)
	// File times tick with the kernel's clock, a few ms apart: back-date
	// the first version so that the rewrite below is told apart.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	h1, _ := binaryHash(path)
	reads := hashReads.Load()
	if h2, _ := binaryHash(path); h2 != h1 || hashReads.Load() != reads {
		t.Fatal("the same file was read again, or hashed differently")
	}
	os.WriteFile(path, []byte("two"), 0o755) // same size, in place
	h3, _ := binaryHash(path)
	if h3 == h1 {
		t.Fatal("a file written in place kept its old hash")
	}
	os.WriteFile(path+".new", []byte("six"), 0o755)
	os.Rename(path+".new", path)
	h4, _ := binaryHash(path)
	if h4 == h3 {
		t.Fatal("a file renamed into place kept the old hash")
	}

	// A binary kept for rollback is a hard link, and the oldest kept one
	// is removed: both change the file's ctime, neither its content.
	kept := filepath.Join(t.TempDir(), "kept")
	if err := os.Link(path, kept); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	linksChanged(st.Dev, st.Ino)
	unlinkKept(kept)
	reads = hashReads.Load()
	if h, _ := binaryHash(path); h != h4 || hashReads.Load() != reads {
		t.Fatal("a link baton added and removed made it read the binary again")
	}

	// Written in place with its size and modification time kept (cp -p
	// over it): only the ctime tells.
	var before syscall.Stat_t
	syscall.Stat(path, &before)
	os.WriteFile(path, []byte("ten"), 0o755)
	os.Chtimes(path, time.Unix(before.Atim.Unix()), time.Unix(before.Mtim.Unix()))
	if h, _ := binaryHash(path); h == h4 {
		t.Fatal("a file written in place with its mtime restored kept its old hash")
	}
}

// A pump paused in the middle of a line keeps its start; the line is
// whole once it resumes (after an upgrade, the new image's pump starts
// with that start).
func TestPump_pauseKeepsThePartialLine(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	pp := newPump(r, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pp.run(func(l []byte) { lines <- string(l) })
	}()
	w.WriteString("one\npar")
	if l := <-lines; l != "one" {
		t.Fatalf("want one, have %q", l)
	}
	// The pause may meet the pump before it read "par": write more after
	// it parked, then look at what it holds.
	select {
	case <-pp.pause.Pause():
	case <-time.After(waitLong):
		t.Fatal("the pump did not park")
	}
	if got := string(pp.partial); got != "par" && got != "" {
		t.Fatalf("want the start of the line kept, have %q", got)
	}
	w.WriteString("tial\n")
	pp.pause.Resume()
	if l := <-lines; l != "partial" {
		t.Fatalf("want the whole line after the resume, have %q", l)
	}
	// The next image starts where this one stopped.
	w.WriteString("next")
	w.Close()
	<-done
	if l := <-lines; l != "next" {
		t.Fatalf("want the last line at EOF, have %q", l)
	}
	r2, w2, _ := os.Pipe()
	w2.WriteString("rest\n")
	w2.Close()
	newPump(r2, []byte("the ")).run(func(l []byte) { lines <- string(l) })
	if l := <-lines; l != "the rest" {
		t.Fatalf("want the kept start prepended, have %q", l)
	}
}

// hashBinary finds BATON_LISTEN_PPID's name wherever it lies, across the
// boundaries of its reads too, and its hash is the file's SHA-256.
func TestHashBinary_findsTheMarkerAnywhere(t *testing.T) {
	marker := protocol.EnvListenParent
	dir := t.TempDir()
	for _, at := range []int{-1, 0, 1000, 256<<10 - 5, 256 << 10, 512<<10 + 3} {
		content := bytes.Repeat([]byte{'x'}, 600<<10)
		if at >= 0 {
			copy(content[at:], marker)
		}
		path := filepath.Join(dir, fmt.Sprint("bin", at))
		if err := os.WriteFile(path, content, 0o755); err != nil {
			t.Fatal(err)
		}
		sum, direct, err := hashBinary(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(content); sum != hex.EncodeToString(want[:]) {
			t.Fatalf("marker at %d: hash %s, want %x", at, sum, want)
		}
		if direct != (at >= 0) {
			t.Fatalf("marker at %d: found %v", at, direct)
		}
	}
}
