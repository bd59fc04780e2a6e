package child

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
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
}

// BatchWriter queues items and writes them in batches from one task. It
// is the piece that makes "202 Accepted, written in the background" safe
// across restarts: once its task's context is cancelled it refuses new
// items with ErrClosed and writes everything enqueued before.
type BatchWriter[T any] struct {
	cfg     BatchConfig[T]
	mu      sync.Mutex
	buf     []T
	closed  bool
	wake    chan struct{} // a batch is full, or the writer was closed
	room    chan struct{} // closed and replaced when the queue shrinks
	pending atomic.Int64  // enqueued and not yet written
}

// NewBatchWriter returns a writer; run it with Server.StartTask(w.Task(name))
// or call Run in a goroutine of your own.
func NewBatchWriter[T any](cfg BatchConfig[T]) *BatchWriter[T] {
	if cfg.Size <= 0 {
		cfg.Size = DefaultBatchSize
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultBatchInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueueSize
	}
	return &BatchWriter[T]{cfg: cfg, wake: make(chan struct{}, 1), room: make(chan struct{})}
}

// Task returns the writer as a Task called name, with its Pending count.
func (w *BatchWriter[T]) Task(name string) Task {
	return Task{Name: name, Run: w.Run, Pending: w.Pending}
}

// Enqueue queues item. It returns ErrClosed once the writer is closing,
// and ctx's error when the queue stayed full until ctx was done. When it
// returns nil, the item will be written unless the process is cut off at
// the task deadline.
func (w *BatchWriter[T]) Enqueue(ctx context.Context, item T) error {
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
func (w *BatchWriter[T]) Run(ctx context.Context) error {
	flushCtx := FlushContext(ctx)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-w.wake:
		case <-tick.C:
		case <-ctx.Done():
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			for w.Pending() > 0 {
				if err := w.flushOne(flushCtx); err != nil {
					return err
				}
			}
			return nil
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
	}
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
	backoff := retryMin
	for {
		err := w.cfg.Flush(ctx, batch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return errors.Join(err, context.Cause(ctx))
		}
		if w.cfg.OnError != nil {
			w.cfg.OnError(err, n)
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
	w.mu.Lock()
	w.buf = w.buf[n:]
	if len(w.buf) == 0 {
		w.buf = nil // let the backing array go
	}
	close(w.room)
	w.room = make(chan struct{})
	w.mu.Unlock()
	w.pending.Add(-int64(n))
	return nil
}
