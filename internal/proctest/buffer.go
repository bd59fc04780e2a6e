package proctest

import (
	"strings"
	"sync"
	"time"
)

// Buffer collects output written to it, safe for concurrent use, and
// lets a test wait for a line to appear instead of sleeping.
type Buffer struct {
	mu     sync.Mutex
	b      strings.Builder
	more   chan struct{} // closed and replaced on every write
	closed bool
}

// NewBuffer returns an empty Buffer.
func NewBuffer() *Buffer { return &Buffer{more: make(chan struct{})} }

// Write appends p and wakes the waiters.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.b.Write(p)
	close(b.more)
	b.more = make(chan struct{})
	b.mu.Unlock()
	return len(p), nil
}

// Close marks the end of the output: waits for text not yet seen end.
func (b *Buffer) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.more)
		b.more = make(chan struct{})
	}
	b.mu.Unlock()
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Count returns how many times substr was written so far.
func (b *Buffer) Count(substr string) int {
	return strings.Count(b.String(), substr)
}

// Wait waits until substr was written n times and returns the line that
// holds the n-th one. It returns false after timeout, or when the buffer
// was closed first.
func (b *Buffer) Wait(substr string, n int, timeout time.Duration) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		out, more, closed := b.b.String(), b.more, b.closed
		b.mu.Unlock()
		if line, ok := nth(out, substr, n); ok {
			return line, true
		}
		if closed {
			return "", false
		}
		select {
		case <-more:
		case <-deadline.C:
			return "", false
		}
	}
}

// WaitClosed waits up to timeout for Close.
func (b *Buffer) WaitClosed(timeout time.Duration) bool {
	_, ok := b.Wait("\x00never written", 1, timeout)
	b.mu.Lock()
	defer b.mu.Unlock()
	return ok || b.closed
}

func nth(out, substr string, n int) (string, bool) {
	off := 0
	for i := 1; ; i++ {
		j := strings.Index(out[off:], substr)
		if j < 0 {
			return "", false
		}
		j += off
		if i == n {
			start := strings.LastIndexByte(out[:j], '\n') + 1
			end := strings.IndexByte(out[j:], '\n')
			if end < 0 {
				end = len(out) - j
			}
			return out[start : j+end], true
		}
		off = j + len(substr)
	}
}
