package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/baton-run/baton/internal/pause"
	"github.com/hashicorp/go-hclog"
)

// maxLine bounds one line of a child's output: a longer one is cut into
// pieces, so a child that writes without newlines cannot grow memory.
const maxLine = 16 << 10

// tailLines is how many of its last lines a generation keeps, to show why
// it failed.
const tailLines = 20

// tail is a small ring of a generation's last output lines.
type tail struct {
	mu    sync.Mutex
	lines [tailLines]string
	next  int
	n     int
}

func (t *tail) add(line string) {
	t.mu.Lock()
	t.lines[t.next] = line
	t.next = (t.next + 1) % tailLines
	if t.n < tailLines {
		t.n++
	}
	t.mu.Unlock()
}

// all returns the kept lines, oldest first.
func (t *tail) all() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, t.n)
	for i := 0; i < t.n; i++ {
		out = append(out, t.lines[(t.next-t.n+i+tailLines)%tailLines])
	}
	return out
}

// String returns the kept lines, oldest first, one per line.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for i := 0; i < t.n; i++ {
		b.WriteString(t.lines[(t.next-t.n+i+tailLines)%tailLines])
		b.WriteByte('\n')
	}
	return b.String()
}

// pump reads one of a generation's output pipes line by line. It parks
// between two reads while baton upgrades itself: the start of a line it
// read is kept in partial, the rest waits in the pipe.
type pump struct {
	f       *os.File
	pause   *pause.Reader
	partial []byte        // owned by run; read by an upgrade once it parked
	done    chan struct{} // closed once run closed the pipe
}

func newPump(f *os.File, partial []byte) *pump {
	return &pump{f: f, pause: pause.New(f.SetReadDeadline), partial: partial, done: make(chan struct{})}
}

// run reads until EOF and hands each line to emit, then closes the pipe.
func (pp *pump) run(emit func(line []byte)) {
	defer pp.pause.End() // after done: a pause that sees the end sees done
	defer close(pp.done)
	defer pp.f.Close()
	br := bufio.NewReaderSize(pp.f, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pp.partial = append(pp.partial, line...)
			if pp.pause.Park(err) {
				continue
			}
			line = nil
		}
		if len(pp.partial) > 0 {
			line = append(pp.partial, line...)
			pp.partial = nil
		}
		if len(line) > 0 {
			emit(bytes.TrimRight(line, "\r\n"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// reemit logs one line of a child's output through log. A JSON object
// with a level ("@level" from hclog, "level" from slog, zap and logrus) and
// a message keeps its level and fields; any other line is logged at info.
func reemit(log hclog.Logger, line []byte) {
	if len(line) > 1 && line[0] == '{' {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			if level, msg, args, ok := structured(m); ok {
				log.Log(level, msg, args...)
				return
			}
		}
	}
	log.Info(string(line))
}

// renderLine makes a JSON log line readable for baton logs: "[WARN]
// message key=value …"; other lines are returned as they are.
func renderLine(line string) string {
	if len(line) < 2 || line[0] != '{' {
		return line
	}
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return line
	}
	level, msg, args, ok := structured(m)
	if !ok {
		return line
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", strings.ToUpper(level.String()), msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	return b.String()
}

func structured(m map[string]any) (hclog.Level, string, []any, bool) {
	levelKey, msgKey := "@level", "@message"
	if _, ok := m[levelKey]; !ok {
		levelKey = "level"
	}
	if _, ok := m[msgKey]; !ok {
		msgKey = "msg"
		if _, ok := m[msgKey]; !ok {
			msgKey = "message"
		}
	}
	lv, ok1 := m[levelKey].(string)
	msg, ok2 := m[msgKey].(string)
	if !ok1 || !ok2 {
		return 0, "", nil, false
	}
	level := hclog.LevelFromString(strings.ToLower(lv))
	switch strings.ToLower(lv) {
	case "warning":
		level = hclog.Warn
	case "fatal", "panic", "dpanic", "critical":
		level = hclog.Error
	}
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	// baton adds the time, and the program's name, generation and pid.
	skip := map[string]bool{levelKey: true, msgKey: true, "@timestamp": true, "time": true, "ts": true, "timestamp": true, "@module": true}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !skip[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		v := m[k]
		if f, ok := v.(float64); ok && f == float64(int64(f)) {
			v = int64(f) // JSON numbers decode as float64: 1000000, not 1e+06
		}
		args = append(args, k, v)
	}
	return level, msg, args, true
}
