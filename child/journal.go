package child

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// DefaultJournalSegmentSize is the size past which a journal starts a new
// segment file, so that a segment whose items are all written can be
// removed while the writer runs on.
const DefaultJournalSegmentSize = 4 << 20

// ErrJournal is wrapped by the errors of Enqueue when the item could not
// be made durable (a full disk, an I/O error): it was not acknowledged,
// and the caller should say so (503) rather than promise it.
var ErrJournal = errors.New("child: journal write failed")

// journalRescan is how often a running writer looks for segments of
// writers that died meanwhile (an old generation cut off by its task
// deadline or killed while this one already served).
var journalRescan = time.Second

// journal is the on-disk side of a BatchWriter: the segments this process
// writes, and the replay of those whose writer died.
//
// Ownership is a lock, never a pid: each segment is flock(2)ed by the
// process that writes it for as long as it lives, and the kernel releases
// the lock when the process dies, however it dies. A segment that can be
// locked has no live writer. Segments are created under a temporary name
// and renamed once locked, so no other process ever sees one unlocked.
//
// Segments are preallocated, filled with zeros in the background before
// they are needed: a record written into space the file already has
// leaves its size and blocks as they were, so its fdatasync flushes the
// data alone, without a commit of the file system's own journal, which
// an append needs and which waits for every other process's metadata.
// The first segment is not, so that opening stays quick: it is appended
// to until the first preallocated one is ready.
type journal struct {
	dir     string
	id      string // this writer's, the prefix of its segments' names
	log     hclog.Logger
	segSize int64
	// sync makes a segment's written bytes durable: fdatasync(2). A seam
	// for the tests.
	sync func(f *os.File) error

	mu        sync.Mutex // the segment files: commits, done marks, rotation
	segs      []*segment // this writer's, oldest first; the last one is written
	next      *segment   // preallocated, published and locked, not written yet
	preparing bool       // next is being prepared
	prepFor   *segment   // the segment that asked for it: one try each
	prep      sync.WaitGroup
	index     int  // of the newest segment, prepared ones included
	broken    bool // the newest segment may hold garbage past size: start another
	closed    bool

	syncs int           // successful commits, each one sync
	items int           // items made durable by them
	syncT time.Duration // spent in those syncs

	bad map[string]bool // writers whose segments are not ours to read: logged once
}

// segment is one of this writer's segment files, open and locked.
type segment struct {
	f        *os.File
	path     string
	size     int64  // bytes written and accounted for: the next record goes here
	capacity int64  // bytes preallocated
	last     uint64 // highest item seq written to it, 0 when none
}

const segSuffix, tmpSuffix = ".seg", ".tmp"

// journalsOpened tells apart the writers one process opens.
var journalsOpened atomic.Int64

// openJournal creates dir when needed and the writer's first segment, so
// that a directory that cannot hold a journal is an error now, not under
// load.
func openJournal(dir string, segSize int64, log hclog.Logger) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("child: journal: %w", err)
	}
	if segSize <= 0 {
		segSize = DefaultJournalSegmentSize
	}
	j := &journal{
		dir: dir,
		id: strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(os.Getpid()) +
			"-" + strconv.FormatInt(journalsOpened.Add(1), 10),
		log:     log,
		segSize: segSize,
		sync:    func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) },
		bad:     map[string]bool{},
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.rotateLocked(); err != nil {
		return nil, fmt.Errorf("child: journal: %w", err)
	}
	j.prepareLocked()
	return j, nil
}

// rotateLocked makes the next segment the one written: the prepared one
// when it is ready, otherwise a new one, not preallocated.
func (j *journal) rotateLocked() error {
	s := j.next
	j.next = nil
	if s == nil {
		var err error
		if s, err = j.createSegment(j.index+1, false); err != nil {
			return err
		}
		j.index++
	}
	j.segs = append(j.segs, s)
	j.broken = false
	return nil
}

// prepareLocked starts preparing the next segment in the background, once
// per segment written.
func (j *journal) prepareLocked() {
	cur := j.segs[len(j.segs)-1]
	if j.next != nil || j.preparing || j.closed || j.prepFor == cur {
		return
	}
	j.preparing, j.prepFor = true, cur
	j.index++
	idx := j.index
	j.prep.Add(1)
	go func() {
		defer j.prep.Done()
		var s *segment
		err := j.roomToPreallocate()
		if err == nil {
			s, err = j.createSegment(idx, true)
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		j.preparing = false
		switch {
		case errors.Is(err, errLowSpace):
			j.log.Debug("journal: little space left; appending instead of preallocating", "error", err)
		case err != nil:
			j.log.Warn("journal: cannot prepare the next segment; appending instead", "error", err)
		case j.closed:
			removeSegment(s.f, s.path)
		default:
			j.next = s
		}
	}()
}

// errLowSpace: the journal's file system has too little room to
// preallocate a segment. Filling it with zeros would take the room that
// acknowledgements need, and, on a disk that was full, the room that was
// just freed.
var errLowSpace = errors.New("too little free space to preallocate a segment")

// roomToPreallocate returns errLowSpace unless the file system has room
// for four segments.
func (j *journal) roomToPreallocate() error {
	var st unix.Statfs_t
	if err := unix.Statfs(j.dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < 4*j.segSize {
		return fmt.Errorf("%w: %d bytes free, %d per segment", errLowSpace, free, j.segSize)
	}
	return nil
}

// createSegment creates, locks and publishes segment idx: written and
// synced under a temporary name (filled with zeros to segSize when
// preallocated), renamed, and the directory synced, so that the segment
// survives a power cut once an item is acknowledged from it.
func (j *journal) createSegment(idx int, prealloc bool) (*segment, error) {
	base := filepath.Join(j.dir, fmt.Sprintf("%s.%06d", j.id, idx))
	tmp, path := base+tmpSuffix, base+segSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock %s: %w", tmp, err))
	}
	if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
		return fail(err)
	}
	capacity := int64(len(segMagic))
	if prealloc {
		zeros := make([]byte, 64<<10)
		for capacity < j.segSize {
			n := min(int64(len(zeros)), j.segSize-capacity)
			if _, err := f.WriteAt(zeros[:n], capacity); err != nil {
				return fail(err)
			}
			capacity += n
		}
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &segment{f: f, path: path, size: int64(len(segMagic)), capacity: capacity}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// commit appends b, framed data records up to item seq last, and makes
// them durable with one sync: the group commit of every Enqueue that
// staged a record in b. On an error nothing of b counts: the segment is
// cut back to where b began, or, when that fails too, abandoned for a new
// one, so that a later record never follows garbage.
func (j *journal) commit(b []byte, n int, last uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	cur := j.segs[len(j.segs)-1]
	past := cur.size+int64(len(b)) > cur.capacity // would grow the file
	if j.broken || (past && j.next != nil) || cur.size >= j.segSize {
		if err := j.rotateLocked(); err != nil {
			return fmt.Errorf("%w: new segment: %w", ErrJournal, err)
		}
		cur = j.segs[len(j.segs)-1]
	}
	if _, err := cur.f.WriteAt(b, cur.size); err != nil {
		j.cutLocked(cur)
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	t0 := time.Now()
	err := j.sync(cur.f)
	j.syncT += time.Since(t0)
	if err != nil {
		// After a failed fdatasync the kernel may have dropped the dirty
		// pages: the file's state is unknown, so no record goes after it.
		j.cutLocked(cur)
		j.broken = true
		return fmt.Errorf("%w: sync %s: %w", ErrJournal, cur.path, err)
	}
	cur.size += int64(len(b))
	cur.last = last
	j.syncs++
	j.items += n
	if cur.size > cur.capacity/2 {
		j.prepareLocked()
	}
	return nil
}

// cutLocked truncates cur back to its accounted size after a failed
// write; when even that fails, the next record goes to a new segment.
func (j *journal) cutLocked(cur *segment) {
	if err := cur.f.Truncate(cur.size); err != nil {
		j.broken = true
		j.log.Warn("journal: cannot cut a failed write off its segment; starting another", "segment", cur.path, "error", err)
		return
	}
	// Its preallocated space went with the cut: the next record moves to
	// the next prepared segment, if there is one.
	cur.capacity = min(cur.capacity, cur.size)
}

// done records that every item up to seq was flushed, and removes the
// segments that hold nothing else. The mark is not synced: lost, it only
// makes a replay write some items twice.
func (j *journal) done(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	cur := j.segs[len(j.segs)-1]
	if !j.broken {
		rec := appendRecord(nil, recDone, seq, nil)
		if _, err := cur.f.WriteAt(rec, cur.size); err != nil {
			j.cutLocked(cur)
		} else {
			cur.size += int64(len(rec))
		}
	}
	kept := j.segs[:0]
	for i, s := range j.segs {
		if i < len(j.segs)-1 && s.last <= seq {
			removeSegment(s.f, s.path)
			continue
		}
		kept = append(kept, s)
	}
	j.segs = kept
}

// removeSegment unlinks a segment while its lock is held, then closes it:
// a replayer that locks it afterwards finds it unlinked and leaves it.
func removeSegment(f *os.File, path string) {
	os.Remove(path)
	f.Close()
}

// close ends the journal: with everything flushed (allDone) its segments
// are removed; otherwise they are only closed, which releases their
// locks, for the next generation to replay.
func (j *journal) close(allDone bool) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	j.closed = true
	j.mu.Unlock()
	j.prep.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.next != nil {
		removeSegment(j.next.f, j.next.path) // never written
		j.next = nil
	}
	if j.syncs > 0 {
		j.log.Info("journal: closed", "syncs", j.syncs, "items", j.items,
			"items_per_sync", float64(j.items)/float64(j.syncs), "sync_time", j.syncT)
	}
	for _, s := range j.segs {
		if allDone {
			removeSegment(s.f, s.path)
		} else {
			s.f.Close()
		}
	}
	j.segs = nil
}

// paths returns the names of this writer's live segments.
func (j *journal) paths() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for _, s := range j.segs {
		out = append(out, s.path)
	}
	return out
}

// deadWriter is the journal of a writer that died: its segments, locked
// by this process, and the items they hold that its done marks do not
// cover, in the order they were enqueued.
type deadWriter struct {
	id    string
	files []*os.File // locked; the last one takes this process's done marks
	paths []string
	items []record // data records past the done mark
	done  uint64
	off   int64 // where the next done mark goes in the last file
}

// release closes the files, which releases their locks; the segments stay
// for a later replay.
func (d *deadWriter) release() {
	for _, f := range d.files {
		f.Close()
	}
	d.files = nil
}

// remove deletes the segments, under their locks.
func (d *deadWriter) remove() {
	for i, f := range d.files {
		removeSegment(f, d.paths[i])
	}
	d.files = nil
}

// markDone records in the dead writer's last segment that its items up to
// seq were flushed, so that a replay cut off later resumes after them.
func (d *deadWriter) markDone(seq uint64) {
	if len(d.files) == 0 {
		return
	}
	rec := appendRecord(nil, recDone, seq, nil)
	if _, err := d.files[len(d.files)-1].WriteAt(rec, d.off); err == nil {
		d.off += int64(len(rec))
	}
	d.done = seq
}

// claimDead finds the writers whose segments no live process holds, locks
// all their segments and reads them. A writer with any segment locked by
// someone else (itself, alive, or another generation replaying it) is
// left alone. Temporary files of writers that died while creating a
// segment are removed.
func (j *journal) claimDead() []*deadWriter {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		j.log.Warn("journal: cannot list the directory", "dir", j.dir, "error", err)
		return nil
	}
	groups := map[string][]string{} // writer id → segment names
	for _, e := range ents {
		name := e.Name()
		id, _, ok := strings.Cut(name, ".")
		if !ok || id == j.id || j.bad[id] {
			continue
		}
		switch {
		case strings.HasSuffix(name, segSuffix):
			groups[id] = append(groups[id], name)
		case strings.HasSuffix(name, tmpSuffix):
			removeIfDead(filepath.Join(j.dir, name))
		}
	}
	ids := make([]string, 0, len(groups))
	for id := range groups {
		ids = append(ids, id)
	}
	sort.Strings(ids) // oldest writer first: ids begin with the start time
	var out []*deadWriter
	for _, id := range ids {
		names := groups[id]
		sort.Strings(names) // by index, zero-padded
		if d := j.claimWriter(id, names); d != nil {
			out = append(out, d)
		}
	}
	return out
}

// removeIfDead removes a file whose lock can be taken: a segment its
// writer never published.
func removeIfDead(path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		os.Remove(path)
	}
	f.Close()
}

// claimWriter locks and reads the segments of one writer, or returns nil
// when one of them is held. A torn record at the end of a segment is
// logged and cut off, so that done marks appended later are read.
func (j *journal) claimWriter(id string, names []string) *deadWriter {
	d := &deadWriter{id: id}
	var segs []*os.File
	var paths []string
	for _, name := range names {
		path := filepath.Join(j.dir, name)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue // removed meanwhile by its writer: it was done
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			for _, g := range segs {
				g.Close()
			}
			j.log.Debug("journal: segments of a live writer left alone", "writer", id, "segment", path)
			return nil // alive, or being replayed by another process
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil || st.Nlink == 0 {
			f.Close() // its writer removed it before releasing the lock
			continue
		}
		segs = append(segs, f)
		paths = append(paths, path)
	}
	if len(segs) == 0 {
		return nil
	}
	d.files, d.paths = segs, paths
	var data []record
	for i, f := range segs {
		b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
		if err != nil {
			j.log.Error("journal: cannot read a segment; leaving it", "segment", paths[i], "error", err)
			d.release()
			return nil
		}
		recs, end, reason, err := parseSegment(b)
		if err != nil {
			j.log.Error("journal: not a journal segment; leaving its writer's segments alone", "segment", paths[i], "error", err)
			j.bad[id] = true
			d.release()
			return nil
		}
		if reason != "" {
			j.log.Warn("journal: skipping a torn record at the end of a segment",
				"segment", paths[i], "offset", end, "bytes", len(b)-end, "reason", reason)
			if err := f.Truncate(int64(end)); err != nil {
				j.log.Warn("journal: cannot cut the torn record off", "segment", paths[i], "error", err)
			}
		}
		for _, r := range recs {
			switch r.kind {
			case recData:
				data = append(data, r)
			case recDone:
				d.done = max(d.done, r.seq)
			}
		}
		if i == len(segs)-1 {
			d.off = int64(end)
			if end < len(segMagic) {
				// A header cut short (segments are published with theirs
				// synced, so only a damaged disk does this): complete it,
				// so that done marks appended after it are read.
				f.WriteAt([]byte(segMagic), 0)
				d.off = int64(len(segMagic))
			}
		}
	}
	for _, r := range data {
		if r.seq > d.done {
			d.items = append(d.items, r)
		}
	}
	// Segment names follow creation, and a prepared one may be created
	// before one made in a hurry but written after it: replay in the
	// order of the items.
	sort.SliceStable(d.items, func(a, b int) bool { return d.items[a].seq < d.items[b].seq })
	return d
}
