// Package pause stops a goroutine that reads a file or a socket between
// two reads, and lets it go on later. baton uses it when it replaces
// itself in place (baton upgrade): every goroutine that reads what a
// generation sends — its output pipes, its notify socket, its handoff
// socket — parks with nothing in its hands, and what was not read yet
// stays in the kernel's buffers for the next image of baton to read.
//
// The reader's blocked read is woken by a read deadline in the past; a
// reader that is not in a read meets the deadline at its next one.
package pause

import (
	"errors"
	"os"
	"sync"
	"time"
)

// Reader is the pause switch of one reading goroutine. The reader calls
// Park after each failed read and End when it returns; its owner calls
// Pause and Resume. Its methods are safe for concurrent use.
type Reader struct {
	deadline func(time.Time) error // the reader's SetReadDeadline

	mu     sync.Mutex
	want   bool          // a pause was asked and not resumed
	woken  bool          // the deadline was set for a pause the reader has not met yet
	parked chan struct{} // closed once the reader parked for the pause asked, or ended
	closed bool          // parked is closed
	resume chan struct{} // closed by Resume
	ended  bool
}

// New returns the switch of a reader whose reads SetReadDeadline bounds.
func New(setReadDeadline func(time.Time) error) *Reader {
	return &Reader{deadline: setReadDeadline}
}

// Pause asks the reader to park between two reads. The channel is closed
// once it parked, or once it ended (then nothing of it is left to pause),
// or once the pause was resumed.
func (r *Reader) Pause() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.want {
		return r.parked
	}
	r.want, r.closed = true, false
	r.parked, r.resume = make(chan struct{}), make(chan struct{})
	if r.ended {
		r.closed = true
		close(r.parked)
		return r.parked
	}
	r.woken = true
	r.deadline(time.Unix(1, 0))
	return r.parked
}

// Resume lets a parked reader read again; a pause it has not met yet is
// called off.
func (r *Reader) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.want {
		return
	}
	r.want = false
	if !r.closed {
		r.closed = true
		close(r.parked) // nobody waits for this pause any more
	}
	close(r.resume)
}

// Park is called by the reader after a read failed with err. When err is
// the wake-up of a pause it parks until Resume, clears the deadline, and
// reports true: read again. Otherwise it reports false, and err is the
// reader's to handle.
func (r *Reader) Park(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	r.mu.Lock()
	if !r.woken {
		r.mu.Unlock()
		return false // a deadline of the reader's own
	}
	r.woken = false
	if !r.want {
		// The pause was resumed before the reader met it.
		r.deadline(time.Time{})
		r.mu.Unlock()
		return true
	}
	if !r.closed {
		r.closed = true
		close(r.parked)
	}
	resume := r.resume
	r.mu.Unlock()
	<-resume
	r.mu.Lock()
	if !r.woken { // unless another pause was asked meanwhile
		r.deadline(time.Time{})
	}
	r.mu.Unlock()
	return true
}

// End is called by the reader when it returns: a pause waits for it no
// longer.
func (r *Reader) End() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = true
	if r.want && !r.closed {
		r.closed = true
		close(r.parked)
	}
}
