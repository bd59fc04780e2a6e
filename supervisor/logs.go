package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/baton-run/baton/supervisor/config"
)

// Bounds of a program's in-memory log, behind baton logs.
const (
	ringLines = 10000
	ringBytes = 1 << 20
	// followBuffer is how many lines a slow `baton logs -f` may lag
	// before it loses lines; the program never waits for it.
	followBuffer = 4096
)

// LogLine is one line of a program's output.
type LogLine struct {
	Time       time.Time `json:"time"`       // when baton read it
	Generation int       `json:"generation"` // that wrote it
	Text       string    `json:"text"`       // without its newline
	// Seq numbers the program's lines from 1, across upgrades of baton:
	// a follower that lost its stream asks for the lines after the last
	// it saw.
	Seq uint64 `json:"seq,omitempty"`
}

// ring keeps a program's last output lines, bounded in lines and bytes,
// and hands new lines to followers without ever blocking the writer.
type ring struct {
	mu        sync.Mutex
	lines     []LogLine // a ring of ringLines
	next, n   int
	bytes     int
	seq       uint64 // of the last line added
	followers map[chan LogLine]bool
	dropped   map[chan LogLine]int
}

func newRing() *ring {
	return &ring{lines: make([]LogLine, ringLines), followers: map[chan LogLine]bool{}, dropped: map[chan LogLine]int{}}
}

// add appends l, numbered next; a line that has its number already (the
// ring of the image before an upgrade, restored) keeps it.
func (r *ring) add(l LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.Seq == 0 {
		r.seq++
		l.Seq = r.seq
	} else if l.Seq > r.seq {
		r.seq = l.Seq
	}
	for r.n > 0 && (r.n == ringLines || r.bytes+len(l.Text) > ringBytes) {
		oldest := (r.next - r.n + ringLines) % ringLines
		r.bytes -= len(r.lines[oldest].Text)
		r.lines[oldest] = LogLine{}
		r.n--
	}
	r.lines[r.next] = l
	r.next = (r.next + 1) % ringLines
	r.n++
	r.bytes += len(l.Text)
	for c := range r.followers {
		select {
		case c <- l:
		default:
			r.dropped[c]++
		}
	}
}

// last returns up to n of the last lines, oldest first; all with n ≤ 0.
func (r *ring) last(n int) []LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked(n)
}

func (r *ring) lastLocked(n int) []LogLine {
	if n <= 0 || n > r.n {
		n = r.n
	}
	out := make([]LogLine, 0, n)
	for i := r.n - n; i < r.n; i++ {
		out = append(out, r.lines[(r.next-r.n+i+ringLines)%ringLines])
	}
	return out
}

// follow returns the last n lines (with after > 0: every line kept
// after that number instead) and a channel of the lines that follow;
// stop ends the subscription and reports how many lines it dropped.
func (r *ring) follow(n int, after uint64) (backlog []LogLine, c <-chan LogLine, stop func() int) {
	ch := make(chan LogLine, followBuffer)
	// The backlog and the subscription under one lock: no line falls
	// between them.
	r.mu.Lock()
	switch {
	case after == 0:
		backlog = r.lastLocked(n)
	case after < r.seq:
		backlog = r.lastLocked(int(min(r.seq-after, uint64(r.n))))
	}
	r.followers[ch] = true
	r.mu.Unlock()
	return backlog, ch, func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.followers, ch)
		d := r.dropped[ch]
		delete(r.dropped, ch)
		return d
	}
}

// rotatingFile is a log file that never grows past its MaxSize: a write
// that would take it past is preceded by a rotation (file → file.1 → …
// → file.MaxFiles, the oldest removed).
type rotatingFile struct {
	mu   sync.Mutex
	cfg  config.LogFile
	f    *os.File
	size int64
}

func (r *rotatingFile) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int64(len(b)) > r.cfg.MaxSize {
		b = b[:r.cfg.MaxSize] // a line longer than a whole file is cut
	}
	if r.f == nil {
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	if r.size > 0 && r.size+int64(len(b)) > r.cfg.MaxSize {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(b)
	r.size += int64(n)
	return n, err
}

func (r *rotatingFile) open() error {
	if err := os.MkdirAll(filepath.Dir(r.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(r.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

func (r *rotatingFile) rotate() error {
	r.f.Close()
	r.f = nil
	if r.cfg.MaxFiles == 0 {
		os.Remove(r.cfg.Path)
	} else {
		os.Remove(r.cfg.Path + "." + strconv.Itoa(r.cfg.MaxFiles))
		for i := r.cfg.MaxFiles - 1; i >= 1; i-- {
			os.Rename(r.cfg.Path+"."+strconv.Itoa(i), r.cfg.Path+"."+strconv.Itoa(i+1))
		}
		os.Rename(r.cfg.Path, r.cfg.Path+".1")
	}
	return r.open()
}

func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// logFiles shares one rotatingFile per path among the generations and
// programs that write to it.
type logFiles struct {
	mu    sync.Mutex
	files map[string]*rotatingFile
}

func (l *logFiles) get(cfg config.LogFile) *rotatingFile {
	if cfg.Path == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.files == nil {
		l.files = map[string]*rotatingFile{}
	}
	f := l.files[cfg.Path]
	if f == nil {
		f = &rotatingFile{cfg: cfg}
		l.files[cfg.Path] = f
	} else {
		f.mu.Lock()
		f.cfg = cfg // a reload may change the bounds
		f.mu.Unlock()
	}
	return f
}

func (l *logFiles) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
}

// formatLine renders a line of a program's output for its log file.
func formatLine(t time.Time, gen, pid int, text string) []byte {
	return fmt.Appendf(nil, "%s gen=%d pid=%d %s\n", t.UTC().Format("2006-01-02T15:04:05.000Z"), gen, pid, text)
}
