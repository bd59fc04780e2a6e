package supervisor

import (
	"fmt"
	"testing"
)

// seqs returns the numbers of lines.
func seqs(lines []LogLine) string {
	out := make([]uint64, 0, len(lines))
	for _, l := range lines {
		out = append(out, l.Seq)
	}
	return fmt.Sprint(out)
}

// The ring numbers its lines from 1 and keeps the numbers of lines
// restored after an upgrade; a follower asks for the last n lines, or for
// those after the last number it saw, and gets every later line on its
// channel, none lost between the backlog and the subscription.
func TestRing_numberedFollow(t *testing.T) {
	five := func() *ring {
		r := newRing()
		for i := range 5 {
			r.add(LogLine{Text: fmt.Sprint("line ", i+1)})
		}
		return r
	}
	for _, tc := range []struct {
		n     int
		after uint64
		want  string
	}{
		{2, 0, "[4 5]"},
		{0, 0, "[1 2 3 4 5]"}, // n ≤ 0: all
		{2, 3, "[4 5]"},       // after wins over n
		{1, 1, "[2 3 4 5]"},
		{0, 5, "[]"},
		{0, 9, "[]"}, // after a later image's number: nothing kept is newer
	} {
		r := five()
		backlog, c, stop := r.follow(tc.n, tc.after)
		r.add(LogLine{Text: "next"})
		next := <-c
		stop()
		if got := seqs(backlog); got != tc.want {
			t.Errorf("follow(%d, %d): want %s, have %s", tc.n, tc.after, tc.want, got)
		}
		if next.Seq != 6 {
			t.Errorf("follow(%d, %d): the next line is %d, want 6", tc.n, tc.after, next.Seq)
		}
	}
	r := five()

	// The image after an upgrade adds the old image's lines, numbers
	// kept, and numbers on from there.
	restored := newRing()
	for _, l := range r.last(0) {
		restored.add(l)
	}
	restored.add(LogLine{Text: "new image"})
	if got, want := seqs(restored.last(2)), fmt.Sprintf("[%d %d]", r.seq, r.seq+1); got != want {
		t.Fatalf("after a restore: want %s, have %s", want, got)
	}

	// Past its bound the ring keeps the newest lines: asked for the
	// lines after one it dropped, it gives what it kept.
	full := newRing()
	for range ringLines + 10 {
		full.add(LogLine{Text: "x"})
	}
	backlog, _, stop := full.follow(0, 3)
	stop()
	if len(backlog) != ringLines || backlog[0].Seq != 11 {
		t.Fatalf("after a dropped line: want the %d kept from 11, have %d from %d", ringLines, len(backlog), backlog[0].Seq)
	}
}
