package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/supervisor/config"

	"github.com/baton-run/baton/internal/execshim"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/internal/watch"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// generation is one start of a program: a process group that received the
// program's sockets. Fields below "loop-owned" belong to the program's
// goroutine.
type generation struct {
	n       int
	cfg     *config.Program
	pid     int
	cmd     *exec.Cmd
	started time.Time
	sockets []*socket
	notify  *notifySocket
	key     string // binary content and config: what a watcher compares
	out     tail
	log     hclog.Logger // the program's output, with gen and pid
	output  func(g *generation, line []byte)
	pumps   sync.WaitGroup
	done    chan struct{}

	// loop-owned
	ready      bool
	readyAt    time.Time
	deadline   *time.Timer // ready timeout, then stop timeout
	deadlineID uint64
	stopAt     time.Time // when the stop signal was sent
	killed     string    // why SIGKILL was sent, "" if it was not
	status     string    // the last STATUS=
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

// spawnSpec is everything needed to start a generation.
type spawnSpec struct {
	program string
	n       int
	cfg     *config.Program
	path    string // from executable
	key     string // from executable
	sockets []*socket
	runDir  string
	baseEnv []string
	logger  hclog.Logger // the program's output logger
	spawner *spawner
	output  func(g *generation, line []byte) // where each output line goes
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

// executable checks the program's command and working directory and
// returns the path to exec and the generation key: the binary's content
// hash and the config's fingerprint.
func executable(cfg *config.Program) (path, key string, err error) {
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
}

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
	sum, err := watch.Hash(path)
	if err != nil {
		return "", err
	}
	id.sum = sum
	hashes.Lock()
	if len(hashes.m) >= maxHashes {
		clear(hashes.m)
	}
	hashes.m[path] = id
	hashes.Unlock()
	return sum, nil
}

// spawn starts a generation through the exec shim, in its own process
// group, with its sockets as fds 3… and its own notify socket.
func spawn(sp spawnSpec) (*generation, error) {
	path := sp.path
	var err error
	g := &generation{n: sp.n, cfg: sp.cfg, sockets: sp.sockets, key: sp.key, done: make(chan struct{})}
	g.notify, err = listenNotify(filepath.Join(sp.runDir, fmt.Sprintf("%.40s.%d.sock", sp.program, sp.n)))
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}

	names := make([]string, len(sp.sockets))
	files := make([]*os.File, len(sp.sockets))
	for i, s := range sp.sockets {
		names[i], files[i] = sp.cfg.Listeners[i].Name, s.file
	}
	env := append([]string(nil), sp.baseEnv...)
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
		execshim.EnvMarker+"=1",
	)

	outR, outW, err := os.Pipe()
	if err != nil {
		g.notify.close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		g.notify.close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cred, err := credential(sp.cfg)
	if err != nil {
		g.notify.close()
		return nil, err
	}
	if cred != nil {
		// The program's user must reach its notify socket, and nobody
		// else: baton's runtime directory is searchable (0711), the
		// socket is the user's alone.
		os.Chown(g.notify.path, int(cred.Uid), int(cred.Gid))
		os.Chmod(g.notify.path, 0o600)
	}
	cmd := &exec.Cmd{
		Path:       execshim.Self,
		Args:       execshim.Args(path, sp.cfg.Command),
		Env:        env,
		Dir:        sp.cfg.Dir,
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  sp.cfg.Stop.Signal,
			Credential: cred,
		},
	}
	err = sp.spawner.start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		g.notify.close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	g.cmd, g.pid, g.started = cmd, cmd.Process.Pid, time.Now()
	g.log = sp.logger.With("gen", sp.n, "pid", g.pid)
	g.output = sp.output
	g.pumps.Add(2)
	go g.pump(outR)
	go g.pump(errR)
	return g, nil
}

func (g *generation) pump(r *os.File) {
	defer g.pumps.Done()
	defer r.Close()
	pumpLines(r, func(line []byte) {
		g.out.add(string(line))
		g.output(g, line)
	})
}

// wait reaps the generation and returns how it ended. Before reaping, while
// the exited leader still holds its pid (so the group id cannot be
// reused), it kills what is left of its process group: grandchildren die
// with the generation.
func (g *generation) wait() processStatus {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	syscall.Kill(-g.pid, syscall.SIGKILL)
	g.cmd.Wait()
	return statusOf(g.cmd.ProcessState)
}

// signal sends sig to the generation's process group.
func (g *generation) signal(sig syscall.Signal) error {
	return syscall.Kill(-g.pid, sig)
}
