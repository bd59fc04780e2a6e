package child

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/proctest"
	"github.com/hashicorp/go-hclog"
)

const waitJournal = 30 * time.Second

func init() {
	for name, f := range journalChildren {
		fakeChildren[name] = f
	}
}

// journalChildren are the fake children of the journal's tests.
var journalChildren = map[string]func() int{
	// A writer that makes ITEMS items durable from 16 goroutines, says so,
	// and waits, never flushing, until it is killed.
	"journal-writer": func() int {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		n, _ := strconv.Atoi(os.Getenv("ITEMS"))
		w, err := OpenBatchWriter(BatchConfig[int]{Journal: os.Getenv("JOURNAL_DIR"),
			Flush: func(context.Context, []int) error { return errors.New("never written") }})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 16 {
					if err := w.Enqueue(context.Background(), i); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			fmt.Println("enqueue:", err)
			return 1
		}
		fmt.Printf("enqueued %d\n", n)
		<-stop
		return 0
	},
}

// setRescan makes running writers look for dead ones every d.
func setRescan(t *testing.T, d time.Duration) {
	old := journalRescan
	journalRescan = d
	t.Cleanup(func() { journalRescan = old })
}

func bufLogger(b *proctest.Buffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Debug})
}

// recorder is a Flush that keeps what it is given.
type recorder struct {
	mu    sync.Mutex
	items []int
	more  chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) flush(_ context.Context, b []int) error {
	r.mu.Lock()
	r.items = append(r.items, b...)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.items...)
}

// waitCount waits until at least n items were flushed.
func (r *recorder) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitJournal)
	for len(r.got()) < n {
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("want %d items flushed, have %d", n, len(r.got()))
		}
	}
}

// exactly checks that items are 0…n-1, each once.
func exactly(t *testing.T, items []int, n int) {
	t.Helper()
	sorted := append([]int(nil), items...)
	sort.Ints(sorted)
	if len(sorted) != n {
		t.Fatalf("want items 0…%d once each, have %d items", n-1, len(sorted))
	}
	for i, v := range sorted {
		if v != i {
			t.Fatalf("want items 0…%d once each, have %v at %d", n-1, v, i)
		}
	}
}

// runWriter runs w until stop is called, which returns Run's result.
func runWriter(w *BatchWriter[int]) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// crashed leaves in dir the journal of a writer that made items 0…n-1
// durable and died before writing any: its files closed, which releases
// their locks as the kernel does at death.
func crashed(t *testing.T, dir string, n int, cfg BatchConfig[int]) (last string, end int64) {
	t.Helper()
	cfg.Journal = dir
	if cfg.Flush == nil {
		cfg.Flush = func(context.Context, []int) error { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	w, err := OpenBatchWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := w.Enqueue(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	cur := w.j.segs[len(w.j.segs)-1]
	last, end = cur.path, cur.size
	w.j.close(false)
	return last, end
}

// replay runs a new writer on dir until it has replayed what it found at
// start, and returns what it flushed and logged.
func replay(t *testing.T, dir string) ([]int, string) {
	t.Helper()
	logs := proctest.NewBuffer()
	rec := newRecorder()
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, Flush: rec.flush, Logger: bufLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWriter(w)
	if _, ok := logs.Wait("replay of dead writers done", 1, waitJournal); !ok {
		stop()
		t.Fatalf("no replay; log:\n%s", logs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return rec.got(), logs.String()
}

// Two processes on one journal, as during a handover: the running writer
// leaves the other's live segment alone, however often it looks, and
// replays it once the kernel has released its lock, here after SIGKILL.
func TestJournal_liveSegmentLeftAloneDeadOneReplayed(t *testing.T) {
	setRescan(t, 10*time.Millisecond)
	dir := t.TempDir()
	const n = 1000
	p := proctest.Start(t, proctest.Self("journal-writer", "JOURNAL_DIR="+dir, "ITEMS="+strconv.Itoa(n)))
	p.WaitOutput(fmt.Sprintf("enqueued %d", n), waitJournal)

	logs := proctest.NewBuffer()
	rec := newRecorder()
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, Flush: rec.flush, Logger: bufLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWriter(w)
	defer stop()
	if _, ok := logs.Wait("segments of a live writer left alone", 3, waitJournal); !ok {
		t.Fatalf("the live writer was not seen three times; log:\n%s", logs)
	}
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("replayed %d items of a live writer", len(got))
	}

	p.Signal(syscall.SIGKILL)
	p.Wait(waitJournal)
	rec.waitCount(t, n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	exactly(t, rec.got(), n)
	if left := segments(t, dir); len(left) != 0 {
		t.Fatalf("want an empty journal once all is written, have %v", left)
	}
	if !strings.Contains(logs.String(), "journal: replayed a dead writer") {
		t.Fatalf("no log line for the replay:\n%s", logs)
	}
}

// A power cut in the middle of an append leaves a torn last record: it is
// skipped with a log line, never replayed as an item, and every whole
// record before it is.
func TestJournal_tornLastRecordSkipped(t *testing.T) {
	whole := appendRecord(nil, recData, 9999, []byte("4242"))
	flipped := bytes.Clone(whole)
	flipped[len(flipped)-1] ^= 0x01 // "4243": decodes, but fails its checksum
	for _, tc := range []struct {
		name string
		tail []byte
		torn bool
	}{
		{"intact", nil, false},
		{"cut in the header", whole[:5], true},
		{"cut in the payload", whole[:len(whole)-2], true},
		{"checksum mismatch", flipped, true},
		{"length above the limit", bytes.Repeat([]byte{0xff}, recHeaderLen+4), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const n = 20
			last, end := crashed(t, dir, n, BatchConfig[int]{})
			f, err := os.OpenFile(last, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(tc.tail, end) // right after the last whole record
			f.Close()

			items, logs := replay(t, dir)
			exactly(t, items, n)
			if torn := strings.Contains(logs, "skipping a torn record"); torn != tc.torn {
				t.Fatalf("torn record logged: want %v, have %v; log:\n%s", tc.torn, torn, logs)
			}
			if left := segments(t, dir); len(left) != 0 {
				t.Fatalf("want an empty journal after the replay, have %v", left)
			}
		})
	}
}

// A real full disk, a small tmpfs: Enqueue fails with ErrJournal instead
// of acknowledging what it cannot keep, works again once there is room,
// and a replay finds exactly the items acknowledged, none of the failed
// ones and nothing hidden behind their remains.
func TestJournal_fullDiskFailsEnqueue(t *testing.T) {
	dir := proctest.Tmpfs(t, 256<<10)
	jdir := filepath.Join(dir, "journal")
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: jdir, Logger: quietLogger(),
		Flush: func(context.Context, []int) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	filler := proctest.Fill(t, dir)
	var acked []int
	var failure error
	for i := 0; i < 100000 && failure == nil; i++ {
		if failure = w.Enqueue(context.Background(), i); failure == nil {
			acked = append(acked, i)
		}
	}
	if !errors.Is(failure, ErrJournal) || !errors.Is(failure, syscall.ENOSPC) {
		t.Fatalf("Enqueue on a full disk: want ErrJournal and ENOSPC, have %v", failure)
	}
	if err := w.Enqueue(context.Background(), -1); !errors.Is(err, ErrJournal) {
		t.Fatalf("Enqueue on a full disk again: want ErrJournal, have %v", err)
	}
	os.Remove(filler)
	for i := 1_000_000; i < 1_000_010; i++ {
		if err := w.Enqueue(context.Background(), i); err != nil {
			t.Fatalf("Enqueue once there is room: %v", err)
		}
		acked = append(acked, i)
	}
	if w.Pending() != len(acked) {
		t.Fatalf("queued: want the %d acknowledged items, have %d", len(acked), w.Pending())
	}
	w.j.close(false) // dies

	items, logs := replay(t, jdir)
	sort.Ints(items)
	if fmt.Sprint(items) != fmt.Sprint(acked) {
		t.Fatalf("replayed %d items, want the %d acknowledged (first failure at %d); log:\n%s", len(items), len(acked), len(acked)-10, logs)
	}
	t.Logf("%d items fitted before the disk was full", len(acked)-10)
}

// The same through a seam, wherever the tests run: a failed fdatasync
// fails the Enqueues of its group, the segment is left for a new one, and
// a replay reads both and finds every acknowledged item and no other.
func TestJournal_failedSyncStartsANewSegment(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, Logger: quietLogger(),
		Flush: func(context.Context, []int) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	realSync := w.j.sync
	w.j.sync = func(f *os.File) error { return syscall.EIO }
	w.Enqueue(context.Background(), 0)
	w.j.sync = realSync
	if err := w.Enqueue(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	w.j.sync = func(f *os.File) error { return syscall.EIO }
	if err := w.Enqueue(context.Background(), 1); !errors.Is(err, ErrJournal) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Enqueue with a failing sync: want ErrJournal and EIO, have %v", err)
	}
	w.j.sync = realSync
	for i := 1; i < 5; i++ {
		if err := w.Enqueue(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(w.j.segs); n < 3 {
		t.Fatalf("want 3 segments or more (two abandoned after failed syncs), have %d", n)
	}
	w.j.close(false)
	items, _ := replay(t, dir)
	exactly(t, items, 5)
}

// Group commit: the Enqueues that arrive while a sync is under way share
// the next one.
func TestJournal_groupCommit(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, Logger: quietLogger(),
		Flush: func(context.Context, []int) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.j.close(true)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	realSync := w.j.sync
	w.j.sync = func(f *os.File) error {
		select {
		case entered <- struct{}{}:
			<-release // the first sync takes its time
		default:
		}
		return realSync(f)
	}
	const n = 32
	allStaged := make(chan struct{})
	w.onStage = func(staged int) {
		if staged == n-1 {
			close(allStaged)
		}
	}
	errs := make(chan error, n)
	go func() { errs <- w.Enqueue(context.Background(), 0) }()
	<-entered
	for i := 1; i < n; i++ {
		go func() { errs <- w.Enqueue(context.Background(), i) }()
	}
	// The others stage their records behind the first sync.
	select {
	case <-allStaged:
	case <-time.After(waitJournal):
		t.Fatal("the other Enqueues did not stage their records")
	}
	close(release)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	w.j.mu.Lock()
	syncs := w.j.syncs
	w.j.mu.Unlock()
	if syncs != 2 {
		t.Fatalf("want %d Enqueues to share 2 syncs, have %d syncs", n, syncs)
	}
}

// A directory that cannot be created is an error when the writer is
// opened, not a panic under load.
func TestOpenBatchWriter_uncreatableJournal(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	_, err := OpenBatchWriter(BatchConfig[int]{Journal: filepath.Join(file, "journal"), Logger: quietLogger(),
		Flush: func(context.Context, []int) error { return nil }})
	if !errors.Is(err, syscall.ENOTDIR) || !strings.HasPrefix(err.Error(), "child: journal: ") {
		t.Fatalf("want child: journal: … not a directory, have %v", err)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "use OpenBatchWriter") {
			t.Fatalf("NewBatchWriter with a journal: want a panic naming OpenBatchWriter, have %v", r)
		}
	}()
	NewBatchWriter(BatchConfig[int]{Journal: t.TempDir()})
}

// Segments whose items are all written are removed while the writer
// runs; the last one goes when the writer ends with nothing left.
func TestJournal_finishedSegmentsRemoved(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder()
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, JournalSegmentSize: 512, Size: 16,
		Logger: quietLogger(), Flush: rec.flush})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		w.Enqueue(context.Background(), i)
	}
	if n := len(segments(t, dir)); n < 5 {
		t.Fatalf("want several segments of 512 bytes, have %d", n)
	}
	for w.Pending() > 0 {
		if err := w.flushOne(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	w.j.prep.Wait() // the next segment, prepared in the background
	w.j.mu.Lock()
	want := []string{w.j.segs[0].path}
	if len(w.j.segs) != 1 {
		t.Fatalf("want one segment being written, have %d", len(w.j.segs))
	}
	if w.j.next != nil {
		want = append(want, w.j.next.path)
	}
	w.j.mu.Unlock()
	if left := segments(t, dir); fmt.Sprint(left) != fmt.Sprint(want) {
		t.Fatalf("want only the segment being written and the next one, %v, have %v", want, left)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if left := segments(t, dir); len(left) != 0 {
		t.Fatalf("want an empty journal, have %v", left)
	}
	exactly(t, rec.got(), 200)
}

// A replay cut off by a drain leaves a done mark in the dead writer's
// journal: the next replay resumes after it.
func TestJournal_cutReplayResumes(t *testing.T) {
	dir := t.TempDir()
	crashed(t, dir, 35, BatchConfig[int]{})

	ctx, cancel := context.WithCancel(context.Background())
	var first []int
	w, err := OpenBatchWriter(BatchConfig[int]{Journal: dir, Size: 10, Logger: quietLogger(),
		Flush: func(_ context.Context, b []int) error {
			first = append(first, b...)
			cancel() // the drain begins after this batch
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(first) != 10 {
		t.Fatalf("want one batch of 10 replayed before the drain, have %d", len(first))
	}
	rest, _ := replay(t, dir)
	exactly(t, append(first, rest...), 35)
}

// Any cut of a segment reads as a prefix of its records.
func TestParseSegment_everyCutIsAPrefix(t *testing.T) {
	b := []byte(segMagic)
	var ends []int
	for i := 0; i < 20; i++ {
		b = appendRecord(b, recData, uint64(i+1), bytes.Repeat([]byte{byte(i)}, i*7))
		ends = append(ends, len(b))
	}
	for cut := 0; cut <= len(b); cut++ {
		recs, end, reason, err := parseSegment(b[:cut])
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		want := sort.SearchInts(ends, cut+1) // records wholly before cut
		if len(recs) != want || (reason == "") != allZero(b[end:cut]) {
			t.Fatalf("cut at %d: want %d records, have %d (end %d, %q)", cut, want, len(recs), end, reason)
		}
		for i, r := range recs {
			if r.seq != uint64(i+1) || len(r.payload) != i*7 {
				t.Fatalf("cut at %d: record %d is seq %d with %d bytes", cut, i, r.seq, len(r.payload))
			}
		}
	}
}

// Whatever a segment file holds, parsing never panics, and what it
// returns is exactly the valid records, which frame back into the bytes
// they came from.
func FuzzParseSegment(f *testing.F) {
	valid := appendRecord(appendRecord([]byte(segMagic), recData, 1, []byte(`{"id":"a"}`)), recDone, 1, nil)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add([]byte(segMagic[:3]))
	f.Add([]byte("not a segment"))
	f.Add(append([]byte(segMagic), bytes.Repeat([]byte{0xff}, 40)...))
	f.Add(append(bytes.Clone(valid), make([]byte, 64)...))
	f.Add(append(append(bytes.Clone(valid), 3, 0, 0), make([]byte, 64)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, end, reason, err := parseSegment(b)
		if err != nil {
			if !errors.Is(err, errNotSegment) || len(recs) != 0 {
				t.Fatalf("error %v with %d records", err, len(recs))
			}
			return
		}
		if end > len(b) || (reason == "") != allZero(b[end:]) {
			t.Fatalf("end %d of %d, reason %q", end, len(b), reason)
		}
		if end < len(segMagic) {
			if len(recs) != 0 || end != len(b) {
				t.Fatalf("a header prefix with records or a torn tail")
			}
			return
		}
		again := []byte(segMagic)
		for _, r := range recs {
			again = appendRecord(again, r.kind, r.seq, r.payload)
		}
		if !bytes.Equal(again, b[:end]) {
			t.Fatalf("records do not frame back into the bytes they came from")
		}
	})
}
