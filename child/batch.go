package child

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of BatchConfig.
const (
	DefaultBatchSize     = 256
	DefaultBatchInterval = 20 * time.Millisecond
	DefaultQueueSize     = 65536
	// Failed flushes are retried with a backoff that doubles from
	// retryMin up to retryMax, until they succeed or the task deadline.
	retryMin = 10 * time.Millisecond
	retryMax = time.Second
)

// BatchConfig configures a BatchWriter.
type BatchConfig[T any] struct {
	// Flush writes one batch, all or nothing; a failed batch is retried
	// whole, so Flush should be idempotent (INSERT OR IGNORE, upserts).
	// Its context is cancelled at the task deadline of the drain.
	//
	// With a Journal, Flush also replays the items of writers that died
	// before writing them: at least once, possibly again after a crash in
	// the middle of a replay, and possibly after newer items of the same
	// key written by a newer process. Flush must therefore be idempotent
	// across processes too: an insert that ignores a key it already has
	// is; an update that overwrites a newer value with an older one is not.
	Flush func(ctx context.Context, batch []T) error
	// Size is the largest batch. Default DefaultBatchSize.
	Size int
	// Interval is the longest an item waits before its batch is written.
	// Default DefaultBatchInterval.
	Interval time.Duration
	// Queue bounds the items held; Enqueue waits for room beyond it.
	// Default DefaultQueueSize.
	Queue int
	// OnError, optional, is told about each failed flush before its retry.
	OnError func(err error, batch int)

	// Journal, when set, is a directory where Enqueue makes each item
	// durable before it returns: appended to a segment file of this
	// process and synced with fdatasync(2), one sync shared by every
	// Enqueue waiting at that moment (group commit). An item survives
	// SIGKILL, the OOM killer and a drain cut off by its task deadline:
	// the next writer on the directory replays it through Flush. Use
	// OpenBatchWriter, which creates the directory, and one directory per
	// writer.
	Journal string
	// JournalSegmentSize is the size past which the journal starts a new
	// segment file. Default DefaultJournalSegmentSize.
	JournalSegmentSize int64
	// Encode and Decode turn an item into the bytes the journal keeps and
	// back. Default encoding/json.
	Encode func(T) ([]byte, error)
	Decode func([]byte) (T, error)
	// Logger receives the journal's replays and the damage it finds (a
	// torn record). Default NewLogger("child").
	Logger hclog.Logger
}

// BatchWriter queues items and writes them in batches from one task. It
// is the piece that makes "202 Accepted, written in the background" safe
// across restarts: once its task's context is cancelled it refuses new
// items with ErrClosed and writes everything enqueued before. With a
// journal, it is also safe when the process is killed.
type BatchWriter[T any] struct {
	cfg     BatchConfig[T]
	mu      sync.Mutex
	buf     []T
	closed  bool
	wake    chan struct{} // a batch is full, or the writer was closed
	room    chan struct{} // closed and replaced when the queue shrinks
	pending atomic.Int64  // enqueued and not yet written

	// With a journal: the seq of each item of buf, and the items staged
	// for the next commit, which join buf once synced, in seq order.
	j          *journal
	log        hclog.Logger
	seqs       []uint64
	nextSeq    uint64
	staged     []T
	stagedSeqs []uint64
	stagedRecs []byte
	spare      []byte       // the previous commit's record buffer, reused
	group      *commitGroup // the commit the staged items wait for
	inCommit   int          // items in the commit under way
	committing bool         // a commit loop runs
	idle       *sync.Cond   // on mu: the commit loop stopped
	dead       []*deadWriter
	onStage    func(staged int) // a seam for the tests, called under mu
}

// commitGroup is one group commit: every Enqueue staged in it waits for
// done and returns err.
type commitGroup struct {
	done chan struct{}
	err  error
}

// NewBatchWriter returns a writer without a journal; run it with
// Server.StartTask(w.Task(name)) or call Run in a goroutine of your own. With
// cfg.Journal set it panics: use OpenBatchWriter, which reports a
// directory it cannot use as an error.
func NewBatchWriter[T any](cfg BatchConfig[T]) *BatchWriter[T] {
	if cfg.Journal != "" {
		panic("child: NewBatchWriter with a Journal: use OpenBatchWriter, which returns the journal's error")
	}
	w, _ := OpenBatchWriter(cfg)
	return w
}

// OpenBatchWriter returns a writer, with a journal when cfg.Journal is
// set: it creates the directory and this process's first segment, and
// returns the error when it cannot. Replaying what dead writers left
// there is Run's work, while the server serves.
func OpenBatchWriter[T any](cfg BatchConfig[T]) (*BatchWriter[T], error) {
	if cfg.Size <= 0 {
		cfg.Size = DefaultBatchSize
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultBatchInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueueSize
	}
	w := &BatchWriter[T]{cfg: cfg, wake: make(chan struct{}, 1), room: make(chan struct{})}
	if cfg.Journal == "" {
		return w, nil
	}
	if w.cfg.Encode == nil {
		w.cfg.Encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	if w.cfg.Decode == nil {
		w.cfg.Decode = func(b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		}
	}
	w.log = cfg.Logger
	if w.log == nil {
		w.log = NewLogger("child")
	}
	j, err := openJournal(cfg.Journal, cfg.JournalSegmentSize, w.log)
	if err != nil {
		return nil, err
	}
	w.j = j
	w.idle = sync.NewCond(&w.mu)
	return w, nil
}

// Task returns the writer as a Task called name, with its Pending count.
func (w *BatchWriter[T]) Task(name string) Task {
	return Task{Name: name, Run: w.Run, Pending: w.Pending}
}

// Enqueue queues item. It returns ErrClosed once the writer is closing,
// and ctx's error when the queue stayed full until ctx was done.
//
// Without a journal, when it returns nil the item will be written unless
// the process is cut off at the task deadline or killed. With a journal,
// it returns nil only once the item is durable on disk, and the item will
// be written, by this process or, after a kill, by the next writer on the
// journal; an error wrapping ErrJournal means it could not be made
// durable (a full disk) and is not promised.
func (w *BatchWriter[T]) Enqueue(ctx context.Context, item T) error {
	if w.j != nil {
		return w.enqueueDurable(ctx, item)
	}
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return ErrClosed
		}
		if len(w.buf) < w.cfg.Queue {
			w.buf = append(w.buf, item)
			w.pending.Add(1)
			full := len(w.buf) >= w.cfg.Size
			w.mu.Unlock()
			if full {
				w.signal()
			}
			return nil
		}
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// enqueueDurable stages item's record for the next group commit and waits
// for it. The commit loop runs while items are staged: the first Enqueue
// of a burst starts it, and each Enqueue that arrives during a sync joins
// the next one.
func (w *BatchWriter[T]) enqueueDurable(ctx context.Context, item T) error {
	payload, err := w.cfg.Encode(item)
	if err != nil {
		return fmt.Errorf("child: journal: encode: %w", err)
	}
	if len(payload) > maxRecord {
		return fmt.Errorf("child: journal: item of %d bytes above the limit of %d", len(payload), maxRecord)
	}
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return ErrClosed
		}
		if len(w.buf)+len(w.staged)+w.inCommit < w.cfg.Queue {
			w.nextSeq++
			w.stagedRecs = appendRecord(w.stagedRecs, recData, w.nextSeq, payload)
			w.staged = append(w.staged, item)
			w.stagedSeqs = append(w.stagedSeqs, w.nextSeq)
			if w.group == nil {
				w.group = &commitGroup{done: make(chan struct{})}
			}
			g := w.group
			if w.onStage != nil {
				w.onStage(len(w.staged))
			}
			if !w.committing {
				w.committing = true
				go w.commitLoop()
			}
			w.mu.Unlock()
			select {
			case <-g.done:
				return g.err
			case <-ctx.Done():
				// It may still be committed and written: at least once.
				return ctx.Err()
			}
		}
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// commitLoop commits the staged records, one group per sync, until none
// are left. Synced items join buf in seq order, so that buf, the segment
// and the done marks agree on what "up to seq" means.
func (w *BatchWriter[T]) commitLoop() {
	last := 0 // items in the previous group
	w.mu.Lock()
	for len(w.staged) > 0 {
		if len(w.staged) < last {
			// The handlers just answered may be about to enqueue again:
			// let them run once, so that they share this sync.
			w.mu.Unlock()
			runtime.Gosched()
			w.mu.Lock()
		}
		last = len(w.staged)
		items, seqs, recs, g := w.staged, w.stagedSeqs, w.stagedRecs, w.group
		w.staged, w.stagedSeqs, w.stagedRecs, w.group = nil, nil, w.spare[:0], nil
		w.inCommit = len(items)
		w.mu.Unlock()

		err := w.j.commit(recs, len(items), seqs[len(seqs)-1])

		w.mu.Lock()
		w.inCommit = 0
		w.spare = recs
		full := false
		if err == nil {
			w.buf = append(w.buf, items...)
			w.seqs = append(w.seqs, seqs...)
			w.pending.Add(int64(len(items)))
			full = len(w.buf) >= w.cfg.Size
		} else {
			close(w.room) // the failed items leave room
			w.room = make(chan struct{})
		}
		g.err = err
		close(g.done)
		if full {
			w.signal()
		}
	}
	w.committing = false
	w.idle.Broadcast()
	w.mu.Unlock()
}

// Pending returns the number of items enqueued and not yet written.
func (w *BatchWriter[T]) Pending() int { return int(w.pending.Load()) }

func (w *BatchWriter[T]) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes batches until ctx is cancelled, then closes the writer and
// writes everything that was enqueued before, using FlushContext(ctx). It
// returns nil when nothing is left, or the last flush error when the
// final writes were cut off.
//
// With a journal it first replays, batch by batch between its own, the
// segments of writers that died, and looks for more every second (an old
// generation that dies while this one serves). Once everything it
// acknowledged is written it removes its own segments; cut off, it leaves
// them for the next writer.
func (w *BatchWriter[T]) Run(ctx context.Context) (err error) {
	flushCtx := FlushContext(ctx)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	var rescan <-chan time.Time
	if w.j != nil {
		defer func() { w.finishJournal(err) }()
		t := time.NewTicker(journalRescan)
		defer t.Stop()
		rescan = t.C
		w.dead = w.j.claimDead()
		w.logStartReplay()
	}
	startup := w.j != nil
	for {
		if len(w.dead) > 0 {
			select {
			case <-ctx.Done():
				return w.drain(flushCtx)
			default:
			}
		} else {
			if startup {
				startup = false
				w.log.Info("journal: replay of dead writers done", "journal", w.cfg.Journal)
			}
			select {
			case <-w.wake:
			case <-tick.C:
			case <-rescan:
				if w.dead = w.j.claimDead(); len(w.dead) > 0 {
					w.logStartReplay()
				}
			case <-ctx.Done():
				return w.drain(flushCtx)
			}
		}
		for {
			w.mu.Lock()
			n := len(w.buf)
			w.mu.Unlock()
			if n == 0 {
				break
			}
			if err := w.flushOne(flushCtx); err != nil {
				return err
			}
			if n < w.cfg.Size {
				break
			}
		}
		if len(w.dead) > 0 {
			if err := w.replayOne(flushCtx); err != nil {
				return err
			}
		}
	}
}

// drain closes the writer and writes what it holds.
func (w *BatchWriter[T]) drain(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	for w.committing {
		w.idle.Wait() // the items being synced are acknowledged: keep them
	}
	w.mu.Unlock()
	for w.Pending() > 0 {
		if err := w.flushOne(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (w *BatchWriter[T]) logStartReplay() {
	n := 0
	for _, d := range w.dead {
		n += len(d.items)
	}
	if len(w.dead) > 0 {
		w.log.Info("journal: replaying what dead writers acknowledged", "writers", len(w.dead), "items", n)
	}
}

// finishJournal ends the journal when Run returns: everything written,
// its segments go; otherwise they stay, and so do the dead writers' not
// yet replayed, for the next writer on the directory.
func (w *BatchWriter[T]) finishJournal(err error) {
	w.mu.Lock()
	w.closed = true
	for w.committing {
		w.idle.Wait()
	}
	w.mu.Unlock()
	left := 0
	for _, d := range w.dead {
		left += len(d.items)
		d.release()
	}
	w.dead = nil
	if left > 0 {
		w.log.Warn("journal: replay cut off; the rest is left for the next start", "items", left)
	}
	if err == nil && w.Pending() == 0 {
		w.j.close(true)
		return
	}
	paths := w.j.paths()
	w.j.close(false)
	w.log.Warn("journal: keeping unwritten items for the next start", "items", w.Pending(), "segments", paths)
}

// replayOne writes the next batch of the oldest dead writer through
// Flush, marks it done in that writer's journal, and removes the journal
// once all of it is written. An item that no longer decodes is logged and
// skipped: its bytes passed the checksum, so they are what was written.
func (w *BatchWriter[T]) replayOne(ctx context.Context) error {
	d := w.dead[0]
	n := min(len(d.items), w.cfg.Size)
	batch := make([]T, 0, n)
	for _, r := range d.items[:n] {
		v, err := w.cfg.Decode(r.payload)
		if err != nil {
			w.log.Error("journal: skipping an item that does not decode", "writer", d.id, "seq", r.seq, "error", err)
			continue
		}
		batch = append(batch, v)
	}
	if len(batch) > 0 {
		if err := w.flushRetry(ctx, batch); err != nil {
			return err
		}
	}
	if n > 0 {
		d.markDone(d.items[n-1].seq)
		d.items = d.items[n:]
	}
	if len(d.items) == 0 {
		d.remove()
		w.dead = w.dead[1:]
		w.log.Info("journal: replayed a dead writer", "writer", d.id, "segments", len(d.paths))
	}
	return nil
}

// flushOne writes the oldest batch, retrying until it is written or ctx
// ends.
func (w *BatchWriter[T]) flushOne(ctx context.Context) error {
	w.mu.Lock()
	n := min(len(w.buf), w.cfg.Size)
	batch := w.buf[:n:n]
	w.mu.Unlock()
	if n == 0 {
		return nil
	}
	if err := w.flushRetry(ctx, batch); err != nil {
		return err
	}
	var last uint64
	w.mu.Lock()
	w.buf = w.buf[n:]
	if len(w.buf) == 0 {
		w.buf = nil // let the backing array go
	}
	if w.j != nil {
		last = w.seqs[n-1]
		w.seqs = w.seqs[n:]
		if len(w.seqs) == 0 {
			w.seqs = nil
		}
	}
	close(w.room)
	w.room = make(chan struct{})
	w.mu.Unlock()
	w.pending.Add(-int64(n))
	if w.j != nil {
		w.j.done(last)
	}
	return nil
}

// flushRetry calls Flush until it succeeds or ctx ends, with a backoff.
func (w *BatchWriter[T]) flushRetry(ctx context.Context, batch []T) error {
	backoff := retryMin
	for {
		err := w.cfg.Flush(ctx, batch)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, context.Cause(ctx))
		}
		if w.cfg.OnError != nil {
			w.cfg.OnError(err, len(batch))
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, context.Cause(ctx))
		}
		backoff = min(2*backoff, retryMax)
	}
}
