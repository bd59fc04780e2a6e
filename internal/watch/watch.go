// Package watch watches files and directory trees with fsnotify, or by
// polling, and calls a target's Fire once per burst of changes.
//
// It follows the rules learnt from the reloaders before it: watch the
// parent directory of a file (atomic-rename deploys and editor saves
// replace the inode, and a watch on the file itself dies with it), debounce
// per path with a trailing timer, ignore Chmod-only events, wait for a
// file being written to stop changing, skip content already seen (hash),
// rescan on overflow, and turn ENOSPC and EMFILE into an actionable
// message and a polling fallback.
//
// A Watcher does its file system work on its own goroutines: Set returns
// at once, so that the caller (the supervisor's loop) never waits for a
// directory walk or a hash.
package watch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// SkippedDirs are directories never watched inside a tree.
var SkippedDirs = []string{".git", ".hg", ".svn", "node_modules", "vendor", ".baton"}

// Target is a file or a directory tree whose change its owner acts on.
type Target struct {
	Path     string        // absolute
	Tree     bool          // a directory watched recursively
	Auto     bool          // Tree when Path is a directory, a file otherwise (decided by the watcher)
	Include  []string      // Tree: file name globs that count; empty: every file
	Exclude  []string      // Tree: globs of files and directories to skip
	Content  bool          // file: fire only when the content changed, once it stopped changing
	Debounce time.Duration // quiet time after the last change before Fire
	// Fire is called, from the watcher's goroutines and one call at a
	// time per target, with the paths changed in a burst. It must not
	// block for long.
	Fire func(changed []string)
}

// The watcher's timings. settleStep and settleMax bound the wait for a
// file that is being written to stop changing; retryEvery is how often
// lost directory watches are re-added and, under fsnotify, how often
// targets that could not be watched are polled.
var (
	settleStep = 50 * time.Millisecond
	settleMax  = 10 * time.Second
	retryEvery = time.Second
)

// Watcher watches targets with fsnotify, or by polling, and calls their
// Fire once per burst of changes. Its methods are safe for concurrent use.
type Watcher struct {
	log  hclog.Logger
	poll time.Duration // > 0: poll every target at this interval
	fs   *fsnotify.Watcher
	done chan struct{}
	sets chan setReq // to the setter: the newest set of targets
	wg   sync.WaitGroup

	mu      sync.Mutex
	targets []*watchState
	dirs    map[string]bool // directories under fsnotify
	lost    map[string]bool // directories to watch that could not be: retried
}

type watchState struct {
	Target
	polled  bool                 // polled although fsnotify runs (it could not watch it)
	stamps  map[string]fileStamp // polling: the last stat of each file
	pending map[string]bool      // changed since the last fire
	timer   *time.Timer
	firing  sync.Mutex // one fire at a time per target
	hash    string     // content: the content last seen
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// New starts a watcher that logs to log and polls every poll instead of
// using fsnotify when poll > 0. It watches nothing until Set.
func New(log hclog.Logger, poll time.Duration) *Watcher {
	w := &Watcher{log: log, poll: poll, done: make(chan struct{}), sets: make(chan setReq, 1), dirs: map[string]bool{}, lost: map[string]bool{}}
	w.wg.Add(1)
	go w.setter()
	if poll == 0 {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			w.poll = retryEvery
			log.Error("cannot start fsnotify; polling every second instead", "error", err, "fix", watchLimitHint(err))
		} else {
			w.fs = fw
			w.wg.Add(1)
			go w.events()
		}
	}
	w.wg.Add(1)
	go w.ticker()
	return w
}

// watchLimitHint says what to do about the kernel's inotify limits.
func watchLimitHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return "the inotify watch limit is reached: raise it (sysctl fs.inotify.max_user_watches=524288), watch fewer directories (build.exclude), or set watch { poll = \"1s\" }"
	case errors.Is(err, syscall.EMFILE):
		return "the inotify instance limit is reached: raise it (sysctl fs.inotify.max_user_instances=1024), or set watch { poll = \"1s\" }"
	}
	return "set watch { poll = \"1s\" } to poll instead"
}

type setReq struct {
	targets []*Target
	done    chan struct{}
}

// Set replaces the watched targets and returns at once; the returned
// channel is closed once the watcher has taken them (hashed the content
// targets, walked the trees). Content targets keep the content they had
// seen when the same path was watched before. A Set that is still waiting
// when a newer one comes is dropped: only the newest targets matter.
func (w *Watcher) Set(targets []*Target) <-chan struct{} {
	req := setReq{targets: targets, done: make(chan struct{})}
	for {
		select {
		case w.sets <- req:
			return req.done
		case old := <-w.sets:
			close(old.done)
		case <-w.done:
			close(req.done)
			return req.done
		}
	}
}

// setter applies the targets of Set, in order, on its own goroutine.
func (w *Watcher) setter() {
	defer w.wg.Done()
	for {
		select {
		case req := <-w.sets:
			w.set(req.targets)
			close(req.done)
		case <-w.done:
			return
		}
	}
}

func (w *Watcher) set(targets []*Target) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := map[string]string{}
	for _, ts := range w.targets {
		if ts.timer != nil {
			ts.timer.Stop()
		}
		if ts.Content {
			old[ts.Path] = ts.hash
		}
	}
	w.targets = nil
	want := map[string]bool{}
	for _, t := range targets {
		ts := &watchState{Target: *t, pending: map[string]bool{}}
		if ts.Auto {
			fi, err := os.Stat(ts.Path)
			ts.Tree = err == nil && fi.IsDir()
			ts.Content = !ts.Tree
		}
		if ts.Content {
			if h, ok := old[ts.Path]; ok {
				ts.hash = h
			} else {
				ts.hash, _ = Hash(ts.Path)
			}
		}
		for _, d := range w.dirsOf(ts) {
			want[d] = true
		}
		if w.fs == nil {
			ts.stamps = w.scan(ts)
		}
		w.targets = append(w.targets, ts)
	}
	if w.fs == nil {
		return
	}
	for d := range w.dirs {
		if !want[d] {
			w.fs.Remove(d)
			delete(w.dirs, d)
		}
	}
	for d := range w.lost {
		if !want[d] {
			delete(w.lost, d)
		}
	}
	dirs := make([]string, 0, len(want))
	for d := range want {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		w.addLocked(d)
	}
}

// dirsOf lists the directories to watch for ts: a file's parent, or every
// directory of a tree that is not skipped.
func (w *Watcher) dirsOf(ts *watchState) []string {
	fi, err := os.Stat(ts.Path)
	if !ts.Tree || (err == nil && !fi.IsDir()) {
		return []string{filepath.Dir(ts.Path)}
	}
	if err != nil {
		return []string{ts.Path} // not there yet: retried until it is
	}
	var dirs []string
	filepath.WalkDir(ts.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != ts.Path && ts.skipDir(p) {
			return filepath.SkipDir
		}
		dirs = append(dirs, p)
		return nil
	})
	return dirs
}

func (w *Watcher) addLocked(dir string) {
	if w.dirs[dir] {
		return
	}
	err := w.fs.Add(dir)
	switch {
	case err == nil:
		w.dirs[dir] = true
		delete(w.lost, dir)
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE):
		if !w.lost[dir] {
			w.log.Error("cannot watch a directory; polling it instead", "dir", dir, "error", err, "fix", watchLimitHint(err))
		}
		w.lost[dir] = true
		for _, ts := range w.targets {
			if ts.covers(dir) && !ts.polled {
				ts.polled, ts.stamps = true, w.scan(ts)
			}
		}
	default:
		// Not there (yet): a binary's directory before the first deploy,
		// or one that was removed. Retried every second.
		w.lost[dir] = true
	}
}

// covers reports whether dir is one of ts's directories.
func (ts *watchState) covers(dir string) bool {
	if !ts.Tree {
		return filepath.Dir(ts.Path) == dir
	}
	return dir == ts.Path || strings.HasPrefix(dir, ts.Path+"/")
}

// skipDir reports whether a directory inside a tree is left out.
func (ts *watchState) skipDir(p string) bool {
	base := filepath.Base(p)
	for _, s := range SkippedDirs {
		if base == s {
			return true
		}
	}
	return globMatch(ts.Exclude, ts.Path, p)
}

// matches reports whether a change of path concerns ts.
func (ts *watchState) matches(path string) bool {
	if !ts.Tree {
		return path == ts.Path
	}
	if path != ts.Path && !strings.HasPrefix(path, ts.Path+"/") {
		return false
	}
	for dir := filepath.Dir(path); dir != ts.Path && strings.HasPrefix(dir, ts.Path+"/"); dir = filepath.Dir(dir) {
		if ts.skipDir(dir) {
			return false
		}
	}
	if globMatch(ts.Exclude, ts.Path, path) {
		return false
	}
	return len(ts.Include) == 0 || globMatch(ts.Include, ts.Path, path)
}

// globMatch matches path against globs: a glob without '/' matches the
// file's name in any directory; one with '/' matches the path relative
// to root. A leading "**/" means any directory.
func globMatch(globs []string, root, path string) bool {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		rel = path
	}
	for _, g := range globs {
		g = strings.TrimPrefix(g, "**/")
		target := filepath.Base(path)
		if strings.Contains(g, "/") {
			target = rel
		}
		if ok, _ := filepath.Match(g, target); ok {
			return true
		}
	}
	return false
}

// events handles fsnotify's events until the watcher closes.
func (w *Watcher) events() {
	defer w.wg.Done()
	for {
		select {
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			w.onEvent(ev)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("too many file events at once; rescanning everything")
				w.rescan()
			} else {
				w.log.Warn("file watching", "error", err)
			}
		}
	}
}

func (w *Watcher) onEvent(ev fsnotify.Event) {
	if ev.Op == fsnotify.Chmod {
		// Spotlight, backups and antivirus touch modes; content is the same.
		w.log.Trace("event ignored: chmod only", "path", ev.Name)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if w.dirs[ev.Name] {
			// The directory went, and its watch with it; when it comes
			// back, it is watched again and rescanned.
			delete(w.dirs, ev.Name)
			w.lost[ev.Name] = true
		}
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
			w.newDirLocked(ev.Name)
		}
	}
	for _, ts := range w.targets {
		if ts.matches(ev.Name) {
			w.scheduleLocked(ts, ev.Name)
		}
	}
}

// newDirLocked watches a directory created inside a tree, and counts the
// files already in it as changed: they may have been written before the
// watch was added.
func (w *Watcher) newDirLocked(dir string) {
	for _, ts := range w.targets {
		if !ts.Tree || !strings.HasPrefix(dir, ts.Path+"/") || !ts.matchesDir(dir) {
			continue
		}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() {
				if ts.skipDir(p) {
					return filepath.SkipDir
				}
				w.addLocked(p)
			} else if ts.matches(p) {
				w.scheduleLocked(ts, p)
			}
			return nil
		})
	}
}

// matchesDir reports whether dir is inside ts and not skipped.
func (ts *watchState) matchesDir(dir string) bool {
	for d := dir; d != ts.Path && strings.HasPrefix(d, ts.Path+"/"); d = filepath.Dir(d) {
		if ts.skipDir(d) {
			return false
		}
	}
	return true
}

// scheduleLocked notes a change of path and (re)starts ts's debounce
// timer: ts fires once its paths have been quiet for the debounce time.
func (w *Watcher) scheduleLocked(ts *watchState, path string) {
	ts.pending[path] = true
	if ts.timer != nil {
		ts.timer.Stop()
	}
	ts.timer = time.AfterFunc(ts.Debounce, func() { w.fire(ts) })
}

func (w *Watcher) fire(ts *watchState) {
	ts.firing.Lock()
	defer ts.firing.Unlock()
	select {
	case <-w.done:
		return
	default:
	}
	w.mu.Lock()
	changed := make([]string, 0, len(ts.pending))
	for p := range ts.pending {
		changed = append(changed, p)
	}
	ts.pending = map[string]bool{}
	current := w.isCurrentLocked(ts)
	w.mu.Unlock()
	if len(changed) == 0 || !current {
		return
	}
	sort.Strings(changed)
	if ts.Content {
		if !settle(ts.Path) {
			w.log.Warn("file still changing; acting on it anyway", "path", ts.Path, "waited", settleMax)
		}
		h, err := Hash(ts.Path)
		if err != nil {
			w.log.Warn("watched file is gone or unreadable; nothing changes", "path", ts.Path, "error", err)
			return
		}
		w.mu.Lock()
		same := h == ts.hash
		ts.hash = h
		w.mu.Unlock()
		if same {
			w.log.Debug("same content as before; nothing to do", "path", ts.Path)
			return
		}
	}
	ts.Fire(changed)
}

func (w *Watcher) isCurrentLocked(ts *watchState) bool {
	for _, t := range w.targets {
		if t == ts {
			return true
		}
	}
	return false
}

// settle waits until path has the same size, mtime and inode twice in a
// row, settleStep apart, and reports whether it did within settleMax.
func settle(path string) bool {
	deadline := time.Now().Add(settleMax)
	prev, err := os.Stat(path)
	for time.Now().Before(deadline) {
		time.Sleep(settleStep) // waiting for another process's writes to end
		cur, err2 := os.Stat(path)
		if err == nil && err2 == nil && stampOf(prev) == stampOf(cur) {
			return true
		}
		prev, err = cur, err2
	}
	return false
}

// rescan treats every target as changed: after an overflow, events were
// lost. Content targets still act only on new content.
func (w *Watcher) rescan() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ts := range w.targets {
		w.scheduleLocked(ts, ts.Path)
	}
}

// ticker polls: every target when polling, otherwise the targets that
// could not be watched; and it re-adds lost directories.
func (w *Watcher) ticker() {
	defer w.wg.Done()
	every := retryEvery
	if w.poll > 0 {
		every = w.poll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
		}
		w.mu.Lock()
		if w.fs != nil {
			for d := range w.lost {
				if _, err := os.Stat(d); err != nil {
					continue
				}
				w.addLocked(d)
				if w.dirs[d] {
					w.log.Debug("watching again", "dir", d)
					for _, ts := range w.targets {
						if ts.covers(d) || (ts.Tree && strings.HasPrefix(ts.Path, d)) {
							w.newDirLocked(d)
							w.scheduleLocked(ts, ts.Path)
						}
					}
				}
			}
		}
		for _, ts := range w.targets {
			if w.fs != nil && !ts.polled {
				continue
			}
			stamps := w.scan(ts)
			for p, st := range stamps {
				if old, ok := ts.stamps[p]; !ok || old != st {
					w.scheduleLocked(ts, p)
				}
			}
			for p := range ts.stamps {
				if _, ok := stamps[p]; !ok {
					w.scheduleLocked(ts, p)
				}
			}
			ts.stamps = stamps
		}
		w.mu.Unlock()
	}
}

// scan stats ts's files, for polling.
func (w *Watcher) scan(ts *watchState) map[string]fileStamp {
	out := map[string]fileStamp{}
	fi, err := os.Stat(ts.Path)
	if err != nil {
		return out
	}
	if !fi.IsDir() {
		out[ts.Path] = stampOf(fi)
		return out
	}
	filepath.WalkDir(ts.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if p != ts.Path && ts.skipDir(p) {
				return filepath.SkipDir
			}
			return nil
		}
		if ts.matches(p) {
			if fi, err := d.Info(); err == nil {
				out[p] = stampOf(fi)
			}
		}
		return nil
	})
	return out
}

// Close stops the watcher; no target fires after it returns.
func (w *Watcher) Close() {
	close(w.done)
	if w.fs != nil {
		w.fs.Close()
	}
	w.mu.Lock()
	for _, ts := range w.targets {
		if ts.timer != nil {
			ts.timer.Stop()
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
	// A fire already running finishes; wait for it.
	w.mu.Lock()
	targets := w.targets
	w.mu.Unlock()
	for _, ts := range targets {
		ts.firing.Lock()
		ts.firing.Unlock()
	}
}

// Hash returns the hex SHA-256 of a file's content: what a content target
// compares.
func Hash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
