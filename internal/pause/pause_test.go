package pause

import (
	"bufio"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lineReader reads lines from a pipe until EOF, parking when asked.
func lineReader(t *testing.T) (w *os.File, r *Reader, lines chan string, done chan struct{}) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r = New(pr.SetReadDeadline)
	lines, done = make(chan string, 16), make(chan struct{})
	go func() {
		defer close(done)
		defer r.End()
		defer pr.Close()
		br := bufio.NewReader(pr)
		for {
			line, err := br.ReadString('\n')
			if err == nil {
				lines <- line
				continue
			}
			if r.Park(err) {
				if line != "" {
					lines <- "partial:" + line
				}
				continue
			}
			return
		}
	}()
	return pw, r, lines, done
}

func wait(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: timed out", what)
	}
}

// A paused reader reads nothing: what is written meanwhile waits in the
// pipe, and is read once it resumes.
func TestPause_leavesDataInTheKernel(t *testing.T) {
	w, r, lines, done := lineReader(t)
	w.WriteString("one\n")
	if l := <-lines; l != "one\n" {
		t.Fatalf("want one, have %q", l)
	}
	wait(t, r.Pause(), "pause")
	w.WriteString("two\n")
	select {
	case l := <-lines:
		t.Fatalf("a paused reader read %q", l)
	case <-time.After(50 * time.Millisecond): // nothing may come; not a synchronisation
	}
	r.Resume()
	if l := <-lines; l != "two\n" {
		t.Fatalf("want two after the resume, have %q", l)
	}
	// Again: a second pause works the same way.
	wait(t, r.Pause(), "second pause")
	r.Resume()
	w.WriteString("three\n")
	if l := <-lines; l != "three\n" {
		t.Fatalf("want three, have %q", l)
	}
	w.Close()
	wait(t, done, "reader end")
}

// A pause resumed before the reader met it is harmless: the reader goes
// on reading and its next pause still parks it.
func TestPause_resumedBeforeItWasMet(t *testing.T) {
	w, r, lines, done := lineReader(t)
	r.Pause()
	r.Resume()
	w.WriteString("one\n")
	if l := <-lines; l != "one\n" {
		t.Fatalf("want one, have %q", l)
	}
	wait(t, r.Pause(), "pause")
	r.Resume()
	w.Close()
	wait(t, done, "reader end")
}

// A reader that ended never blocks a pause.
func TestPause_endedReader(t *testing.T) {
	w, r, _, done := lineReader(t)
	w.Close()
	wait(t, done, "reader end")
	wait(t, r.Pause(), "pause of an ended reader")
	r.Resume()
}

// A deadline of the reader's own is not a pause: Park leaves it to the
// reader.
func TestPark_ownDeadline(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	defer pr.Close()
	r := New(pr.SetReadDeadline)
	pr.SetReadDeadline(time.Now())
	_, err = pr.Read(make([]byte, 1))
	if r.Park(err) {
		t.Fatalf("Park took the reader's own deadline (%v) for a pause", err)
	}
}
