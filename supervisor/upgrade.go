package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/reaper"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/baton-run/baton/supervisor/control"
)

// baton upgrades itself in place, the way HAProxy's master does: the
// running process execs the binary on disk, keeping its pid, so every
// generation stays its child, and hands the new image its listening
// sockets, the generations' pipes, notify and handoff sockets, and its
// state. The upgrade is a state of the Supervisor's loop:
//
//  1. msgUpgrade: the loop holds reloads and watched changes from now on
//     (they apply after the upgrade), tells systemd RELOADING=1, and
//     checks the binary on disk on
//     a goroutine: `version -json` must take this baton's state
//     (UpgradeFormat), `check -config FILE` must pass. A failure ends the
//     upgrade; nothing changed.
//  2. msgUpgradeChecked: every program freezes (upgrade_program.go): it
//     lets a handover under way end, then parks its readers.
//  3. msgUpgradeFrozen: the loop answers the caller; baton's own servers
//     (control, metrics, health) stop accepting and answer what they
//     accepted, leaving new connections in their backlog for the new
//     image (upgrade_servers.go).
//  4. msgUpgradeExec: the loop collects each program's description and
//     the descriptors, and execs from the spawner's thread
//     (spawner_linux.go says why that thread). If the exec fails, the
//     servers accept again, the programs thaw and baton runs on as it was.
//
// The new image takes the state first thing in main (TakeUpgrade), and
// New goes on from it (resume): no socket is opened again, no generation
// started again, and the counters go on.

// upgradeCheckTimeout bounds each run of the new binary's checks.
const upgradeCheckTimeout = 30 * time.Second

// upgradeAnsweredWait bounds the wait for the caller to have answered its
// client before the exec closes the connection.
const upgradeAnsweredWait = 2 * time.Second

// upgradeKeepsWait bounds the wait for the copies of binaries kept for
// rollback that are under way.
const upgradeKeepsWait = 10 * time.Second

// upgradeOp is an upgrade on its way; the loop owns it.
type upgradeOp struct {
	answered <-chan struct{}    // closed by the caller once it answered its client
	reply    chan upgradeAnswer // buffered: answered once
	replied  bool
	exe      string // the binary on disk
	to       string // its version
	progs    []*program
	cancel   chan struct{} // closed when the upgrade ends without an exec
	// Changes noticed meanwhile, handed over afterwards, and reloads
	// asked for meanwhile, whose config is read again afterwards.
	watches []msgWatch
	reloads []ReloadRequest
}

type upgradeAnswer struct {
	info control.UpgradeReply
	err  error
}

func (op *upgradeOp) answer(a upgradeAnswer) {
	if !op.replied {
		op.replied = true
		op.reply <- a
	}
}

// upgradeMsg is a message of the loop about an upgrade: it runs in the
// loop.
type upgradeMsg interface{ step(s *Supervisor) }

type (
	msgUpgrade        struct{ op *upgradeOp }
	msgUpgradeChecked struct {
		op      *upgradeOp
		version string
		err     error
	}
	msgUpgradeFrozen struct {
		op  *upgradeOp
		err error
	}
	msgUpgradeExec struct { // baton's own servers hold their connections
		op      *upgradeOp
		release func() // lets them accept again
	}
)

// upgradeInfo is what UpgradeStatus reports; the loop and the resume
// write it.
type upgradeInfo struct {
	mu sync.Mutex
	st control.UpgradeStatus
}

func (u *upgradeInfo) update(f func(st *control.UpgradeStatus)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.st)
}

// Upgrade replaces the running baton by the binary on disk, in place:
// same pid, so that every generation stays its child, and the same
// sockets, generations and counters. The binary is checked first (it
// must take this baton's state, and pass `check` on the config file); an
// upgrade waits for the handovers under way to end, and is refused while
// a program bakes.
//
// Upgrade returns once every program is paused and the exec is next, with
// the versions, or with an error when the upgrade did not happen (nothing
// changed). The exec follows once answered is closed (nil: at once; at
// the latest after two seconds) and baton's own servers answered what
// they accepted. Whether it worked, UpgradeStatus tells, from the new
// image: one more upgrade, or the old one's LastError.
//
// Requests to programs made during the upgrade end with ErrUpgrading.
// Once baton was upgraded, Run must run on the main thread for the next
// upgrade (see Run; cmd/baton does).
func (s *Supervisor) Upgrade(ctx context.Context, answered <-chan struct{}) (control.UpgradeReply, error) {
	op := &upgradeOp{answered: answered, reply: make(chan upgradeAnswer, 1), cancel: make(chan struct{})}
	if !s.post(msgUpgrade{op}) {
		return control.UpgradeReply{}, ErrStopping
	}
	select {
	case a := <-op.reply:
		return a.info, a.err
	case <-ctx.Done():
		return control.UpgradeReply{}, ctx.Err()
	}
}

// UpgradeStatus reports the running baton's version and its upgrades in
// place.
func (s *Supervisor) UpgradeStatus() control.UpgradeStatus {
	s.upgradeInfo.mu.Lock()
	defer s.upgradeInfo.mu.Unlock()
	st := s.upgradeInfo.st
	st.Version, st.PID = s.cfg.Version, os.Getpid()
	return st
}

func (m msgUpgrade) step(s *Supervisor) {
	op := m.op
	var why error
	switch {
	case s.stopping:
		why = ErrStopping
	case s.upgrading != nil:
		why = errors.New("supervisor: an upgrade is under way already")
	case s.cfg.Dev:
		why = errors.New("supervisor: baton dev does not upgrade in place; stop it and start the new binary")
	case !s.starter.spawner.main && s.resumed != nil:
		why = errors.New("supervisor: this baton was upgraded and does not run on its main thread, so an exec would stop the generations it adopted")
	case s.live > len(s.programs):
		why = errors.New("supervisor: a program removed from the config is still stopping; upgrade once it stopped")
	}
	if why != nil {
		s.log.Error("upgrade refused", "error", why)
		op.answer(upgradeAnswer{err: why})
		return
	}
	exe, err := os.Executable()
	if err != nil {
		op.answer(upgradeAnswer{err: fmt.Errorf("supervisor: upgrade: find the binary: %w", err)})
		return
	}
	op.exe = exe
	s.upgrading = op
	s.upgradeInfo.update(func(st *control.UpgradeStatus) { st.Upgrading, st.LastError = true, "" })
	s.systemd.reloading()
	s.log.Info("upgrade: checking the binary on disk", "binary", exe)
	path := s.path
	s.background(func() {
		version, err := checkBinary(op.cancel, exe, path)
		s.post(msgUpgradeChecked{op, version, err})
	})
}

func (m msgUpgradeChecked) step(s *Supervisor) {
	op := m.op
	if s.upgrading != op {
		return // called off
	}
	if m.err != nil {
		s.endUpgrade(op, m.err)
		return
	}
	op.to = m.version
	s.log.Info("upgrade: the binary on disk passed its checks; pausing the programs", "version", m.version)
	// A handover under way ends first, within its ready timeout.
	wait := 5 * time.Second
	var names []string
	var replies []chan error
	for _, p := range s.inOrder() {
		wait = max(wait, p.cfg.Ready.Timeout+5*time.Second)
		reply := make(chan error, 1)
		p.post(evFreeze{reply})
		op.progs = append(op.progs, p)
		names, replies = append(names, p.name), append(replies, reply)
	}
	s.background(func() {
		err := waitFrozen(names, replies, wait, op.cancel)
		if err == nil {
			select {
			case <-s.keeps.idle():
			case <-time.After(upgradeKeepsWait):
				err = fmt.Errorf("supervisor: still copying binaries kept for rollback after %v", upgradeKeepsWait)
			case <-op.cancel:
				err = ErrUpgrading
			}
		}
		s.post(msgUpgradeFrozen{op, err})
	})
}

// waitFrozen waits for every program's answer to evFreeze.
func waitFrozen(names []string, replies []chan error, wait time.Duration, cancel <-chan struct{}) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	for i, r := range replies {
		select {
		case err := <-r:
			if err != nil {
				return err
			}
		case <-t.C:
			return fmt.Errorf("supervisor: program %s did not end its handover (or its one-shot run) within %v", names[i], wait)
		case <-cancel:
			return ErrUpgrading
		}
	}
	return nil
}

// inflight counts work under way, such as the copies of binaries kept
// for rollback; unlike a WaitGroup, it may be waited for with a timeout
// and counted up again meanwhile.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (c *inflight) add(d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	if c.n == 0 && c.zero != nil {
		close(c.zero)
		c.zero = nil
	}
}

// idle is closed once no work is under way.
func (c *inflight) idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		done := make(chan struct{})
		close(done)
		return done
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	return c.zero
}

func (m msgUpgradeFrozen) step(s *Supervisor) {
	op := m.op
	if s.upgrading != op {
		return
	}
	if m.err != nil {
		s.endUpgrade(op, m.err)
		return
	}
	// The caller hears that the exec is next; then baton's own servers
	// stop accepting and answer what they accepted (which may need the
	// loop: status, /readyz), on a goroutine; then the exec.
	prev := s.UpgradeStatus()
	op.answer(upgradeAnswer{info: control.UpgradeReply{From: s.cfg.Version, To: op.to, PID: os.Getpid(), Upgrades: prev.Upgrades}})
	s.background(func() {
		if op.answered != nil {
			select {
			case <-op.answered:
			case <-time.After(upgradeAnsweredWait):
			}
		}
		release := s.holdServers()
		if !s.post(msgUpgradeExec{op, release}) {
			release()
		}
	})
}

func (m msgUpgradeExec) step(s *Supervisor) {
	op := m.op
	if s.upgrading != op {
		m.release() // called off meanwhile
		return
	}
	err := s.exec(op) // returns only when the exec failed
	m.release()
	s.endUpgrade(op, err)
}

// endUpgrade ends an upgrade that did not exec: the programs go on, and
// the changes noticed meanwhile are handed over.
func (s *Supervisor) endUpgrade(op *upgradeOp, err error) {
	s.upgrading = nil
	for _, p := range op.progs {
		p.post(evThaw{})
	}
	close(op.cancel)
	s.systemd.reloaded()
	err = fmt.Errorf("%w; baton runs on as it was", err)
	s.upgradeInfo.update(func(st *control.UpgradeStatus) { st.Upgrading, st.LastError = false, err.Error() })
	s.log.Error("upgrade failed", "error", err)
	op.answer(upgradeAnswer{err: err})
	for _, w := range op.watches {
		s.watchHandover(w)
	}
	s.replayReloads(op.reloads)
}

// replayReloads asks again for the reloads that came during an upgrade;
// the config reader reads the file as it is now.
func (s *Supervisor) replayReloads(reqs []ReloadRequest) {
	if len(reqs) > 0 {
		s.background(func() {
			for _, req := range reqs {
				s.reloadLater(req)
			}
		})
	}
}

// holdForUpgrade answers a reload, or holds a watched change, that came
// while baton upgrades itself; it reports whether it did.
func (s *Supervisor) holdForUpgrade(m any) bool {
	op := s.upgrading
	if op == nil {
		return false
	}
	switch m := m.(type) {
	case msgApply:
		// Its caller hears ErrUpgrading; the config is read again once
		// the upgrade is over, by this image or the next.
		for _, l := range m.leases {
			l.release()
		}
		m.op.reply <- reloadStarted{err: ErrUpgrading}
		// The same reload asked for again is held once: the config is
		// read as it is then anyway.
		if !slices.ContainsFunc(op.reloads, func(r ReloadRequest) bool { return sameReload(r, m.op.req) }) {
			op.reloads = append(op.reloads, m.op.req)
			s.log.Warn("reload held until the upgrade is over", "reason", m.op.req.Reason)
		}
	case msgWatch:
		op.watches = append(op.watches, m)
	}
	return true
}

// sameReload reports whether two reloads do the same: the same programs,
// forced or not, whatever their reason.
func sameReload(a, b ReloadRequest) bool {
	return a.Force == b.Force && slices.Equal(slices.Sorted(slices.Values(a.Programs)), slices.Sorted(slices.Values(b.Programs)))
}

// exec passes the state and the descriptors to the binary on disk and
// execs it. It returns only when it failed; what it passed is closed then.
func (s *Supervisor) exec(op *upgradeOp) error {
	// Descriptors without close-on-exec from here on: no fork meanwhile.
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	pass := newFDPass()
	defer pass.close() // only reached when the exec failed
	st, err := s.snapshot(pass)
	if err != nil {
		return fmt.Errorf("supervisor: upgrade: %w", err)
	}
	fd, err := pass.writeState(st)
	if err != nil {
		return fmt.Errorf("supervisor: upgrade: %w", err)
	}
	env := append(os.Environ(), EnvUpgrade+"="+strconv.Itoa(fd))
	s.log.Info("upgrade: replacing baton in place", "from", s.cfg.Version, "to", op.to, "binary", op.exe, "pid", os.Getpid(), "descriptors", len(st.FDs))
	if s.cfg.OnExec != nil {
		s.cfg.OnExec(true)
		defer s.cfg.OnExec(false)
	}
	err = s.starter.spawner.exec(op.exe, os.Args, env)
	return fmt.Errorf("supervisor: upgrade: exec %s: %w", op.exe, err)
}

// snapshot describes baton for the new image: the programs (frozen), the
// sockets, the control and metrics listeners, and systemd's state.
func (s *Supervisor) snapshot(pass *fdPass) (*upgradeState, error) {
	prev := s.UpgradeStatus()
	st := &upgradeState{
		Format: UpgradeFormat, Version: s.cfg.Version, Upgrades: prev.Upgrades + 1,
		Control: s.file.Control, Metrics: s.file.Metrics, Health: s.file.Health, RunDir: s.runDir, NotifySeq: s.starter.seq.Load(),
		ControlFD: -1, MetricsFD: -1, HealthFD: -1, Systemd: s.systemd.snapshot(),
		Histograms: s.metrics.histograms(),
	}
	sources := newSourceTable()
	if s.file.Source() == nil {
		return nil, errors.New("the config was not read from a file")
	}
	st.File = sources.add(s.file.Source())
	for _, p := range s.inOrder() {
		reply := make(chan snapshotResult, 1)
		p.post(evSnapshot{pass: pass, sources: sources, reply: reply})
		r := <-reply
		if r.err != nil {
			return nil, fmt.Errorf("program %s: %w", p.name, r.err)
		}
		st.Programs = append(st.Programs, r.st)
	}
	st.Sources = sources.list
	var err error
	if st.Sockets, st.Inherited, err = s.pool.snapshot(pass); err != nil {
		return nil, err
	}
	if s.controlLn != nil {
		if st.ControlFD, err = passListener(pass, s.controlLn); err != nil {
			return nil, fmt.Errorf("control socket: %w", err)
		}
	}
	if s.metricsLn != nil {
		if st.MetricsFD, err = passListener(pass, s.metricsLn); err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
	}
	if s.healthLn != nil {
		if st.HealthFD, err = passListener(pass, s.healthLn); err != nil {
			return nil, fmt.Errorf("health listener: %w", err)
		}
	}
	for _, w := range s.upgrading.watches {
		st.Watches = append(st.Watches, watchState{Program: w.program, Reason: w.reason, Force: w.force})
	}
	st.Reloads = s.upgrading.reloads
	st.FDs = pass.list()
	return st, nil
}

func passListener(pass *fdPass, l net.Listener) (int, error) {
	if pl, ok := l.(*peerListener); ok {
		l = pl.Listener
	}
	sc, ok := l.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no descriptor", l)
	}
	return pass.conn(sc)
}

func (t *sourceTable) add(src *config.Source) int {
	i, ok := t.index[src]
	if !ok {
		i = len(t.list)
		t.list = append(t.list, src)
		t.index[src] = i
	}
	return i
}

// snapshot describes the pool's sockets and passes their descriptors.
func (t *socketPool) snapshot(pass *fdPass) ([]socketState, map[string]int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []socketState
	for _, s := range t.byKey {
		fd, err := pass.conn(s.file)
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s: %w", s.address, err)
		}
		out = append(out, socketState{Key: s.key, Address: s.address, Bound: s.bound, FD: fd, Unix: s.unix, Ino: s.ino, Inherited: s.inherited, Program: s.program})
	}
	inherited := map[string]int{}
	for name, f := range t.inherited {
		fd, err := pass.conn(f)
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s from systemd: %w", name, err)
		}
		inherited[name] = fd
	}
	return out, inherited, nil
}

func (sd *systemd) snapshot() systemdState {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return systemdState{Notify: sd.notify, Watchdog: sd.watchdog, Ready: sd.ready, Failed: sd.failed, Sent: sd.sent}
}

// checkBinary runs the binary on disk: `version -json` must name a state
// format this baton passes, `check -config FILE` must pass. It returns the
// binary's version.
func checkBinary(cancel <-chan struct{}, exe, configFile string) (string, error) {
	ctx, stop := context.WithTimeout(context.Background(), upgradeCheckTimeout)
	defer stop()
	go func() {
		select {
		case <-cancel:
			stop()
		case <-ctx.Done():
		}
	}()
	run := func(args ...string) ([]byte, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// An own child: the orphan reaper leaves its exit status to Wait.
		err := reaper.Start(cmd)
		if err == nil {
			err = cmd.Wait()
			reaper.Forget(cmd.Process.Pid)
		}
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if msg == "" {
				msg = strings.TrimSpace(stdout.String())
			}
			if len(msg) > 2000 {
				msg = msg[:2000] + "…"
			}
			return nil, fmt.Errorf("%s %s: %w: %s", exe, strings.Join(args, " "), err, msg)
		}
		return stdout.Bytes(), nil
	}
	out, err := run("version", "-json")
	if err != nil {
		return "", fmt.Errorf("supervisor: upgrade: the binary on disk does not tell its version (a baton without baton upgrade?): %w", err)
	}
	var v struct {
		Version       string `json:"version"`
		UpgradeFormat int    `json:"upgrade_format"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", fmt.Errorf("supervisor: upgrade: %s version -json: %w", exe, err)
	}
	if v.UpgradeFormat != UpgradeFormat {
		return v.Version, fmt.Errorf("supervisor: upgrade: the binary on disk (baton %s) takes state format %d, this baton passes format %d: stop baton and start the new one instead", v.Version, v.UpgradeFormat, UpgradeFormat)
	}
	if _, err := run("check", "-config", configFile); err != nil {
		return v.Version, fmt.Errorf("supervisor: upgrade: the binary on disk (baton %s) rejects the config: %w", v.Version, err)
	}
	return v.Version, nil
}

// resume is New for an image that an upgrade execed: it goes on with the
// state of the image before it.
func resume(cfg Config) (*Supervisor, error) {
	r := cfg.Resume.st
	cfgs := &cfgResolver{sources: r.Sources}
	if r.File < 0 || r.File >= len(r.Sources) {
		return nil, errors.New("upgrade: the running config was not passed")
	}
	file, err := r.Sources[r.File].Parse()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	file.Control, file.Metrics, file.Health = r.Control, r.Metrics, r.Health
	s := newSupervisor(cfg, file)
	s.resumed = cfg.Resume
	s.runDir, s.notifySeq = r.RunDir, r.NotifySeq
	s.systemd = &systemd{notify: r.Systemd.Notify, watchdog: r.Systemd.Watchdog, ready: r.Systemd.Ready, failed: r.Systemd.Failed, sent: r.Systemd.Sent}
	if s.systemd.ready == nil {
		s.systemd.ready = map[string]int{}
	}
	if s.systemd.failed == nil {
		s.systemd.failed = map[string]string{}
	}
	s.baseEnv = cleanEnv(os.Environ())
	files := map[int]*os.File{}
	fileOf := func(fd int, name string) *os.File {
		if f := files[fd]; f != nil {
			return f
		}
		f := os.NewFile(uintptr(fd), name)
		files[fd] = f
		return f
	}
	for _, ss := range r.Sockets {
		s.pool.byKey[ss.Key] = &socket{key: ss.Key, address: ss.Address, bound: ss.Bound, file: fileOf(ss.FD, "listener "+ss.Bound),
			unix: ss.Unix, ino: ss.Ino, inherited: ss.Inherited, program: ss.Program}
	}
	for name, fd := range r.Inherited {
		s.pool.inherited[name] = fileOf(fd, name)
	}
	if r.ControlFD >= 0 {
		l, err := fileListener(r.ControlFD)
		if err != nil {
			return nil, fmt.Errorf("upgrade: control socket: %w", err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(true)
		s.controlLn = &peerListener{Listener: l, uid: uint32(os.Getuid()), root: true}
	}
	if r.MetricsFD >= 0 {
		if s.metricsLn, err = fileListener(r.MetricsFD); err != nil {
			return nil, fmt.Errorf("upgrade: metrics listener: %w", err)
		}
		s.metrics = newMetrics(s)
		s.metrics.carry(r.Histograms)
	}
	if r.HealthFD >= 0 {
		if s.healthLn, err = fileListener(r.HealthFD); err != nil {
			return nil, fmt.Errorf("upgrade: health listener: %w", err)
		}
	}
	s.env = s.programEnv(file)
	for _, ps := range r.Programs {
		p, err := s.restoreProgram(ps, cfgs)
		if err != nil {
			return nil, fmt.Errorf("upgrade: program %s: %w", ps.Name, err)
		}
		s.programs[p.name] = p
	}
	for _, w := range r.Watches {
		s.pending = append(s.pending, msgWatch{program: w.Program, reason: w.Reason, force: w.Force, trigger: time.Now()})
	}
	s.pendingReloads = r.Reloads
	now := time.Now()
	s.upgradeInfo.st = control.UpgradeStatus{Upgrades: r.Upgrades, Previous: r.Version, UpgradedAt: &now}
	return s, nil
}

func fileListener(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "listener")
	if f == nil {
		return nil, fmt.Errorf("descriptor %d not passed", fd)
	}
	defer f.Close()
	return net.FileListener(f) // a dup, registered with Go's poller
}

// resumed runs in Run once the programs of an image that an upgrade
// execed go on: it tells systemd the reload ended, and hands over the
// changes noticed during the upgrade.
func (s *Supervisor) resumedRun() {
	gens := 0
	for _, p := range s.programs {
		gens += len(p.gens)
	}
	s.log.Info("baton upgraded in place", "from", s.resumed.st.Version, "to", s.cfg.Version, "pid", os.Getpid(),
		"upgrades", s.resumed.st.Upgrades, "programs", strings.Join(s.order(), ","), "generations", gens)
	s.systemd.reloaded()
	pending := s.pending
	s.pending = nil
	if len(pending) > 0 {
		s.background(func() {
			for _, m := range pending {
				s.post(m)
			}
		})
	}
	s.replayReloads(s.pendingReloads)
	s.pendingReloads = nil
}

// serveUpgrade answers POST /v1/upgrade: the answer is written and
// flushed before the exec closes the connection.
func (s *Supervisor) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	answered := make(chan struct{})
	defer close(answered)
	reply, err := s.Upgrade(r.Context(), answered)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, control.ErrorReply{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, reply)
	http.NewResponseController(w).Flush()
}
