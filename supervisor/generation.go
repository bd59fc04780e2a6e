package supervisor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/execshim"
	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/internal/reaper"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// generation is one start of a program: a process group that received the
// program's sockets. The fields above "owned by the program's goroutine"
// are set when it starts and never change.
type generation struct {
	n       int
	cfg     *config.Program
	key     string // binary content and config: what a watcher compares
	pid     int
	started time.Time
	lease   *lease        // its sockets, released when it was reaped
	notify  *notifySocket // nil when it has none (a test's fake)
	handoff *handoff.Peer // baton's end of its handoff socket; nil without one
	via     string        // how it was started: "direct", or the exec shim's "sh" or "baton"
	out     tail          // its last output lines, for failure messages
	log     hclog.Logger  // the program's output, with gen and pid
	done    chan struct{} // closed once reaped
	signal  func(syscall.Signal) error
	pumps   [2]*pump             // its stdout and stderr
	uid     uint32               // whose notify messages count, besides root's
	wait    func() processStatus // reaps it once it exited
	// cancelReady stops the readiness watchers (the delay timer); the
	// probe ends with done. cancelProbe stops a bake's probe.
	cancelReady, cancelProbe func()

	// Owned by the program's goroutine.
	ready   bool
	readyAt time.Time
	// deadline is the ready timeout while it starts, then the stop
	// timeout once it was told to stop.
	deadline timer
	stopAt   time.Time       // when the stop signal was sent
	killed   string          // why SIGKILL was sent, "" if it was not
	status   string          // the last STATUS=
	stats    *protocol.Stats // the last request counters it reported
	// times are the moments of its start, for a handover's breakdown;
	// byHandover: it was told to stop because a successor was ready.
	times      startTimes
	byHandover bool
	// Its health while it serves (monitor.go): the monitor's stop, the
	// watchdog, the probes that failed in a row, its last memory sample,
	// and why it is being replaced (hung: it gets SIGQUIT before SIGKILL).
	stopMonitor   func()
	watchdog      timer
	probeFailures int
	rss           int64
	replacedBy    string
	hung          bool
	quitSent      bool
}

// startTimes are the moments of a generation's start: the trigger of its
// request, the config read, the binary checked, the process spawned (the
// program or its exec shim runs: os/exec returns once its exec
// succeeded).
type startTimes struct {
	trigger, read, checked, spawned time.Time
}

// phaseTime is how long one phase of a handover took.
type phaseTime struct {
	name string
	d    time.Duration
}

// The phases of a handover, in order: what baton does (read, check,
// spawn, signal), what the program does (start: the shim's exec, if any,
// then the program's own start-up until READY), and the old generation's drain,
// reported when it exits.
const (
	phaseRead   = "read"   // trigger → config read and sockets opened
	phaseCheck  = "check"  // → binary checked (resolve, content hash)
	phaseSpawn  = "spawn"  // → process started (notify socket, pipes, fork, exec)
	phaseStart  = "start"  // → READY
	phaseSignal = "signal" // → old generation signalled
	phaseDrain  = "drain"  // old generation signalled → exited
)

// phases returns the handover's breakdown, given when the generation was
// ready and when the old one was signalled.
func (t startTimes) phases(ready, signalled time.Time) []phaseTime {
	return []phaseTime{
		{phaseRead, t.read.Sub(t.trigger)},
		{phaseCheck, t.checked.Sub(t.read)},
		{phaseSpawn, t.spawned.Sub(t.checked)},
		{phaseStart, ready.Sub(t.spawned)},
		{phaseSignal, signalled.Sub(ready)},
	}
}

// formatPhases renders a breakdown for the log: "read=1.2ms check=…".
func formatPhases(ps []phaseTime) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", p.name, p.d.Round(10*time.Microsecond))
	}
	return b.String()
}

func (g *generation) stopReady() {
	if g.cancelReady != nil {
		g.cancelReady()
	}
}

// unwatch stops watching g's health: it no longer serves.
func (g *generation) unwatch() {
	if g.stopMonitor != nil {
		g.stopMonitor()
		g.stopMonitor = nil
	}
	g.watchdog.cancel()
}

func (g *generation) stopProbe() {
	if g.cancelProbe != nil {
		g.cancelProbe()
		g.cancelProbe = nil
	}
}

// close releases what the generation held once it was reaped.
func (g *generation) close() {
	g.stopReady()
	g.stopProbe()
	g.unwatch()
	if g.notify != nil {
		g.notify.close()
	}
	g.lease.release()
	g.handoff.Release()
	close(g.done)
}

// processStatus describes how a process ended, for logs and status.
type processStatus struct {
	Code   int    `json:"code"`             // exit code, -1 when killed by a signal
	Signal string `json:"signal,omitempty"` // the signal that killed it
}

func (s processStatus) String() string {
	if s.Signal != "" {
		return "killed by " + s.Signal
	}
	return "exit status " + strconv.Itoa(s.Code)
}

func (s processStatus) clean() bool { return s.Signal == "" && s.Code == 0 }

func statusOf(st *os.ProcessState) processStatus {
	if st == nil {
		return processStatus{Code: -1, Signal: "unknown"}
	}
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return processStatus{Code: -1, Signal: config.SignalName(ws.Signal())}
	}
	return processStatus{Code: ws.ExitStatus()}
}

// spawnSpec is what a program asks of its environment to start a
// generation.
type spawnSpec struct {
	program string
	n       int
	cfg     *config.Program
	path    string // from resolve
	key     string // from resolve
	lease   *lease // the generation's own lease on its sockets
	// post delivers the generation's events (ready, notify messages, its
	// exit) to the program's goroutine.
	post func(event)
	// output takes each line the generation writes.
	output func(g *generation, line []byte)
	// log receives baton's events about the generation.
	log hclog.Logger
	// statsEvery, when set, asks the program for its request counters at
	// that interval (BATON_STATS_INTERVAL): a program that bakes.
	statsEvery time.Duration
	// handoff is the program's router; nil: no handoff socket.
	handoff *handoff.Router
}

// resolveCommand finds the executable: a bare name in PATH (the program's
// own PATH when its env sets one), anything else as the absolute path the
// config resolved.
func resolveCommand(cfg *config.Program) (string, error) {
	name := cfg.Command[0]
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := os.Getenv("PATH")
	for _, kv := range cfg.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q not found in PATH", name)
}

// resolve checks the program's command and working directory and returns
// the path to exec and the generation key: the binary's content hash and
// the config's fingerprint, without the binary's path (baton dev gives
// each build a new one).
func resolve(cfg *config.Program) (path, key string, err error) {
	path, err = resolveCommand(cfg)
	if err != nil {
		return "", "", err
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return "", "", fmt.Errorf("command: %w", err)
	case st.IsDir():
		return "", "", fmt.Errorf("command %s is a directory", path)
	case st.Mode()&0o111 == 0:
		return "", "", fmt.Errorf("command %s is not executable (chmod +x it)", path)
	}
	if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
		return "", "", fmt.Errorf("directory %s does not exist", cfg.Dir)
	}
	hash, err := binaryHash(path)
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", path, err)
	}
	return path, hash + "/" + cfg.WithBinary("").Fingerprint(), nil
}

// hashes remembers the content hash of binaries by path and file identity
// (device, inode, size, modification and change times): a handover
// re-reads a binary only when it changed. Hashing a 27 MB Go binary costs
// about 20 ms of CPU, most of what baton spends on a handover.
var hashes = struct {
	sync.Mutex
	m map[string]hashEntry
}{m: map[string]hashEntry{}}

type hashEntry struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
	sum          string
	direct       bool // the binary honours BATON_LISTEN_PPID: no exec shim
}

// hashReads counts the binaries read to hash them: the cache's misses.
var hashReads atomic.Int64

// maxHashes bounds the cache: baton dev writes each build to a new path.
const maxHashes = 256

func binaryHash(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	id := hashEntry{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
	hashes.Lock()
	e, ok := hashes.m[path]
	hashes.Unlock()
	if ok && e.dev == id.dev && e.ino == id.ino && e.size == id.size && e.mtime == id.mtime && e.ctime == id.ctime {
		return e.sum, nil
	}
	hashReads.Add(1)
	sum, direct, err := hashBinary(path)
	if err != nil {
		return "", err
	}
	id.sum, id.direct = sum, direct
	hashes.Lock()
	if len(hashes.m) >= maxHashes {
		clear(hashes.m)
	}
	hashes.m[path] = id
	hashes.Unlock()
	return sum, nil
}

// startsDirectly reports whether the binary at path, as binaryHash last
// read it, honours BATON_LISTEN_PPID, so that baton may start it without
// an exec shim. A binary not in the cache goes through the shim.
func startsDirectly(path string) bool {
	hashes.Lock()
	defer hashes.Unlock()
	return hashes.m[path].direct
}

// hashBinary returns the hex SHA-256 of the file at path and whether its
// content holds the name of BATON_LISTEN_PPID: every binary that links
// package internal/protocol does (the child package, baton), and such a
// binary sets its own LISTEN_PID from it (protocol.AdoptListenPID).
// Searching costs little beside the hash, in the same read.
func hashBinary(path string) (sum string, direct bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	h := sha256.New()
	marker := []byte(protocol.EnvListenParent)
	keep := len(marker) - 1 // a chunk's last bytes, where a marker may begin
	buf := make([]byte, keep+256<<10)
	carried := 0
	for {
		n, err := f.Read(buf[carried:])
		if n > 0 {
			h.Write(buf[carried : carried+n])
			end := carried + n
			direct = direct || bytes.Contains(buf[:end], marker)
			carried = min(keep, end)
			copy(buf, buf[end-carried:end])
		}
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), direct, nil
		}
		if err != nil {
			return "", false, err
		}
	}
}

// linksChanged tells the hash cache that baton itself added or removed a
// hard link to the file dev/ino (keeping a binary for rollback): that
// changes the file's ctime, not its content, and without this every
// handover after a kept binary would hash the binary again.
func linksChanged(dev, ino uint64) {
	hashes.Lock()
	defer hashes.Unlock()
	for path, e := range hashes.m {
		if e.dev != dev || e.ino != ino {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(path, &st) == nil && st.Dev == e.dev && st.Ino == e.ino && st.Size == e.size && st.Mtim == e.mtime {
			e.ctime = st.Ctim
			hashes.m[path] = e
		}
	}
}

// starter starts real generations: directly or through the exec shim
// (startsDirectly), in their own process group, from the spawner's
// thread, with their sockets as fds 3… and a notify socket of their own.
type starter struct {
	seq     atomic.Int64 // numbers notify sockets: never one name twice
	spawner *spawner
	runDir  string
	baseEnv []string
	outLog  hclog.Logger // the programs' output
}

// start starts a generation and the goroutines that watch it: it reaps
// it, pumps its output, reads its notify socket and checks its readiness,
// all posting to sp.post. On error nothing is left running or open.
func (s *starter) start(sp spawnSpec) (g *generation, err error) {
	var undo []func() // what to close if the start fails
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, sp.lease.release)
	g = &generation{n: sp.n, cfg: sp.cfg, key: sp.key, lease: sp.lease, done: make(chan struct{})}
	g.notify, err = listenNotify(filepath.Join(s.runDir, fmt.Sprintf("%d.%.40s.sock", s.seq.Add(1), sp.program)))
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	undo = append(undo, g.notify.close)

	names := make([]string, len(sp.cfg.Listeners))
	for i, l := range sp.cfg.Listeners {
		names[i] = l.Name
	}
	files := sp.lease.files()
	handoffEnv, handoffFile, err := attachHandoff(sp, g, protocol.FirstFD+len(files))
	if err != nil {
		return nil, err
	}
	if handoffFile != nil {
		defer handoffFile.Close() // the child has its copy
	}
	env := append([]string(nil), s.baseEnv...)
	if sp.cfg.CleanEnv {
		env = []string{"PATH=" + os.Getenv("PATH")}
	}
	env = append(env, sp.cfg.Env...)
	env = append(env,
		protocol.EnvListenFDs+"="+strconv.Itoa(len(files)),
		protocol.EnvListenFDNames+"="+strings.Join(names, ":"),
		protocol.EnvNotifySocket+"="+g.notify.path,
		protocol.EnvProgram+"="+sp.program,
		protocol.EnvGeneration+"="+strconv.Itoa(sp.n),
		protocol.EnvStopTimeout+"="+sp.cfg.Stop.Timeout.String(),
	)
	if sp.statsEvery > 0 {
		env = append(env, protocol.EnvStatsInterval+"="+sp.statsEvery.String())
	}
	if l := sp.cfg.Liveness; l != nil && l.Watchdog > 0 {
		env = append(env, protocol.EnvWatchdogUsec+"="+strconv.FormatInt(l.Watchdog.Microseconds(), 10))
	}
	env = append(env, handoffEnv...)
	exe, args, via := sp.path, sp.cfg.Command, "direct"
	if startsDirectly(sp.path) {
		env = append(env, protocol.EnvListenParent+"="+strconv.Itoa(os.Getpid()))
	} else {
		exe, args, env = execshim.Command(sp.path, sp.cfg.Command, env)
		via = "sh"
		if exe == execshim.Self {
			via = "baton"
		}
	}
	g.via = via

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { outR.Close() })
	defer outW.Close() // the child has its copy
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { errR.Close() })
	defer errW.Close()
	cred, err := credential(sp.cfg)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := CheckUser(sp.cfg); err != nil {
			return nil, err
		}
		// The program's user must reach its notify socket, and nobody
		// else: baton's runtime directory is searchable (0711), the
		// socket is the user's alone.
		if err := os.Chown(g.notify.path, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		if err := os.Chmod(g.notify.path, 0o600); err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       args,
		Env:        env,
		Dir:        sp.cfg.Dir,
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: withHandoff(files, handoffFile),
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  sp.cfg.Stop.Signal,
			Credential: cred,
		},
	}
	if err := s.spawner.start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", sp.path, err)
	}
	g.pid, g.started = cmd.Process.Pid, time.Now()
	g.log = s.outLog.Named(sp.program).With("gen", sp.n, "pid", g.pid)
	g.pumps = [2]*pump{newPump(outR, nil), newPump(errR, nil)}
	g.uid = uint32(os.Geteuid())
	if cred != nil {
		g.uid = cred.Uid
	}
	g.wait = func() processStatus {
		cmd.Wait()
		reaper.Forget(g.pid) // started by reaper.Start (spawner)
		return statusOf(cmd.ProcessState)
	}
	g.watch(sp.post, sp.output, sp.log)
	switch sp.cfg.Ready.Mode {
	case config.ReadyDelay:
		t := time.AfterFunc(sp.cfg.Ready.Delay, func() { sp.post(evReady{g}) })
		g.cancelReady = func() { t.Stop() }
	case config.ReadyHTTP:
		go probe(g, func() { sp.post(evReady{g}) })
	}
	return g, nil
}

// watch starts the goroutines that follow a started generation: they
// pump its output, read its notify socket, and post its end (evZombie)
// once it exited, to post. A generation that baton adopted from the
// image before an upgrade is followed the same way.
func (g *generation) watch(post func(event), output func(*generation, []byte), log hclog.Logger) {
	g.signal = func(sig syscall.Signal) error { return syscall.Kill(-g.pid, sig) }
	var pumps sync.WaitGroup
	pumps.Add(len(g.pumps))
	for _, pp := range g.pumps {
		go func() {
			defer pumps.Done()
			pp.run(func(line []byte) {
				g.out.add(string(line))
				output(g, line)
			})
		}()
	}
	go reap(g, &pumps, post)
	if g.notify == nil {
		return
	}
	uid := g.uid
	go g.notify.read(
		func(c unix.Ucred) bool { return (c.Uid == uid || c.Uid == 0) && inProcessGroup(int(c.Pid), g.pid) },
		func(m protocol.Message) { post(evNotify{g, m}) },
		func(c unix.Ucred) {
			log.Warn("notify message refused: the sender is not a process of this generation", "gen", g.n, "sender_pid", c.Pid, "sender_uid", c.Uid)
		},
		func(err error) { g.log.Debug("bad notify message", "error", err) },
	)
}

// reap waits for the generation to exit and posts evZombie: its
// program's goroutine reaps it (g.wait) and handles its exit. Before
// that, while the exited leader still holds its pid (so the group id
// cannot be reused), it kills what is left of its process group:
// grandchildren die with the generation.
//
// The program reaps, not this goroutine, so that a generation that exits
// while baton upgrades itself stays a zombie, with its exit status, for
// the new image to reap.
func reap(g *generation, pumps *sync.WaitGroup, post func(event)) {
	err := awaitExit(g.pid)
	if err == nil { // not ECHILD: the group id is still its own
		syscall.Kill(-g.pid, syscall.SIGKILL)
	}
	// The output of its last moments explains a failure: read it to the
	// end first. The group is dead, so the pipes close, unless a process
	// that left the group holds them: the wait is bounded.
	out := make(chan struct{})
	go func() {
		pumps.Wait()
		close(out)
	}()
	select {
	case <-out:
	case <-time.After(2 * time.Second):
	}
	post(evZombie{g})
}

// waitPID reaps process pid, a zombie already, for a generation that
// baton adopted: it has no exec.Cmd.
func waitPID(pid int) processStatus {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return processStatus{Code: -1, Signal: "unknown"}
		case ws.Signaled():
			return processStatus{Code: -1, Signal: config.SignalName(ws.Signal())}
		}
		return processStatus{Code: ws.ExitStatus()}
	}
}
