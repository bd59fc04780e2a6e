package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/protocol"
	"github.com/baton-run/baton/supervisor/config"
	"golang.org/x/sys/unix"
)

// UpgradeFormat numbers the form of the state one image of baton passes
// to the next when it upgrades in place. `baton version -json` reports
// it, and an upgrade is refused, with nothing changed, when the binary on
// disk does not take the running baton's format.
const UpgradeFormat = 1

// EnvUpgrade names the descriptor from which a new image of baton reads
// the state of the image it replaced (see TakeUpgrade).
const EnvUpgrade = "BATON_UPGRADE_FD"

// upgradeState is what the old image of baton passes to the new one, as
// JSON in a memfd. Descriptors are passed by number: the old image dups
// each one without close-on-exec, so it survives the exec at that number.
type upgradeState struct {
	Format   int    `json:"format"`
	Version  string `json:"version"`  // of the old image
	Upgrades int    `json:"upgrades"` // in-place upgrades, this one included
	// FDs lists every descriptor passed, which the new image makes
	// close-on-exec before anything else.
	FDs []int `json:"fds"`
	// Sources are the texts of the config files still in use; File is
	// the index of the one that runs. Control, Metrics and Health are
	// the blocks that run (changing them needs a restart of baton).
	Sources   []*config.Source     `json:"sources"`
	File      int                  `json:"file"`
	Control   config.ControlConfig `json:"control"`
	Metrics   config.MetricsConfig `json:"metrics"`
	Health    config.HealthConfig  `json:"health"`
	RunDir    string               `json:"run_dir"`
	NotifySeq int64                `json:"notify_seq"` // the starter's: never one notify socket name twice
	ControlFD int                  `json:"control_fd"` // -1 without one
	MetricsFD int                  `json:"metrics_fd"`
	HealthFD  int                  `json:"health_fd"`
	Systemd   systemdState         `json:"systemd"`
	Sockets   []socketState        `json:"sockets"`
	Inherited map[string]int       `json:"inherited,omitempty"` // systemd's sockets by name
	Programs  []programState       `json:"programs"`            // in the loop's order
	// Watches are changes noticed while baton upgraded itself, which
	// the new image hands over; Reloads were asked for meanwhile, and
	// the new image reads the config again for them.
	Watches []watchState    `json:"watches,omitempty"`
	Reloads []ReloadRequest `json:"reloads,omitempty"`
	// Histograms are the metrics' histograms (handover, phase, bake
	// durations), which the new image goes on from.
	Histograms []histogramState `json:"histograms,omitempty"`
}

type systemdState struct {
	Notify   string            `json:"notify,omitempty"`
	Watchdog time.Duration     `json:"watchdog,omitempty"` // WATCHDOG_USEC, read before the first image unset it
	Ready    map[string]int    `json:"ready,omitempty"`
	Failed   map[string]string `json:"failed,omitempty"`
	Sent     bool              `json:"sent"`
}

type socketState struct {
	Key       string `json:"key"`
	Address   string `json:"address"`
	Bound     string `json:"bound"`
	FD        int    `json:"fd"`
	Unix      string `json:"unix,omitempty"`
	Ino       uint64 `json:"ino,omitempty"`
	Inherited bool   `json:"inherited,omitempty"`
	Program   string `json:"program,omitempty"`
}

// cfgRef names a program's config: the program block Name of source
// Source, whose binary is Binary when that differs from the block's (a
// rollback runs a kept binary).
type cfgRef struct {
	Source int    `json:"source"`
	Name   string `json:"name"`
	Binary string `json:"binary,omitempty"`
}

type watchState struct {
	Program string `json:"program"`
	Reason  string `json:"reason"`
	Force   bool   `json:"force,omitempty"`
}

type programState struct {
	Name       string            `json:"name"`
	Phase      string            `json:"phase"` // as status reports it
	Config     cfgRef            `json:"config"`
	Sockets    []string          `json:"sockets"` // the keys of its config's sockets
	Gens       []genState        `json:"gens"`
	Current    int               `json:"current"` // 0: none serves
	NextGen    int               `json:"next_gen"`
	LastKey    string            `json:"last_key,omitempty"`
	Bad        map[string]string `json:"bad,omitempty"`
	Kept       []keptState       `json:"kept,omitempty"`
	Failures   int               `json:"failures,omitempty"`   // the restart tracker's
	RestartIn  *time.Duration    `json:"restart_in,omitempty"` // phase backoff: the wait left
	ExitReason string            `json:"exit_reason,omitempty"`
	WaitReason string            `json:"wait_reason,omitempty"` // phase waiting: for what
	Stats      programStats      `json:"stats"`
	Logs       []LogLine         `json:"logs,omitempty"` // its output ring, for baton logs
}

type keptState struct {
	Gen  int    `json:"gen"`
	Path string `json:"path"`
}

type genState struct {
	N       int           `json:"n"`
	Config  cfgRef        `json:"config"`
	Key     string        `json:"key"`
	PID     int           `json:"pid"`
	UID     uint32        `json:"uid"` // whose notify messages count, besides root's
	Started time.Time     `json:"started"`
	Sockets []string      `json:"sockets"`
	Notify  *notifyState  `json:"notify,omitempty"`
	Handoff *handoffState `json:"handoff,omitempty"`
	Output  [2]pipeState  `json:"output"` // stdout, stderr
	Tail    []string      `json:"tail,omitempty"`

	Ready   bool      `json:"ready,omitempty"`
	ReadyAt time.Time `json:"ready_at,omitzero"`
	StopAt  time.Time `json:"stop_at,omitzero"`
	// DeadlineIn is the time left on its deadline (the stop timeout,
	// while it stops), During what it bounds.
	DeadlineIn *time.Duration  `json:"deadline_in,omitempty"`
	During     string          `json:"during,omitempty"`
	Killed     string          `json:"killed,omitempty"`
	Status     string          `json:"status,omitempty"`
	Stats      *protocol.Stats `json:"stats,omitempty"`
	ByHandover bool            `json:"by_handover,omitempty"`
	// Its health: liveness probes failed in a row, the last memory
	// sample, and why it is being replaced (a hung one gets SIGQUIT
	// before its SIGKILL).
	ProbeFailures int    `json:"probe_failures,omitempty"`
	RSS           int64  `json:"rss,omitempty"`
	ReplacedBy    string `json:"replaced_by,omitempty"`
	Hung          bool   `json:"hung,omitempty"`
	QuitSent      bool   `json:"quit_sent,omitempty"`
}

type notifyState struct {
	FD   int    `json:"fd"`
	Path string `json:"path"`
	Ino  uint64 `json:"ino"` // of its file, which only its own close removes
}

type handoffState struct {
	FD int `json:"fd"`
	handoff.PeerState
}

type pipeState struct {
	FD      int    `json:"fd"`
	Partial []byte `json:"partial,omitempty"` // the start of a line read before the pause
}

// fdPass collects the descriptors an upgrade passes: each one is dup'ed
// without close-on-exec, once, however many holders name it. Run it under
// syscall.ForkLock, so that no child forked meanwhile inherits them.
type fdPass struct {
	mu     sync.Mutex
	byOrig map[int]int
	dups   []int
}

func newFDPass() *fdPass { return &fdPass{byOrig: map[int]int{}} }

// add passes descriptor fd and returns the number it has in the new image.
func (fp *fdPass) add(fd int) (int, error) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if d, ok := fp.byOrig[fd]; ok {
		return d, nil
	}
	d, err := unix.Dup(fd) // without close-on-exec
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	fp.byOrig[fd] = d
	fp.dups = append(fp.dups, d)
	return d, nil
}

// conn passes the descriptor of c (a file, a socket, a listener) without
// touching its blocking mode, as (*os.File).Fd would.
func (fp *fdPass) conn(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var d int
	var derr error
	if err := raw.Control(func(fd uintptr) { d, derr = fp.add(int(fd)) }); err != nil {
		return -1, err
	}
	return d, derr
}

// close closes the dups: the upgrade did not happen.
func (fp *fdPass) close() {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	for _, d := range fp.dups {
		unix.Close(d)
	}
	fp.dups, fp.byOrig = nil, map[int]int{}
}

func (fp *fdPass) list() []int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([]int(nil), fp.dups...)
}

// writeState writes st into a memfd without close-on-exec and returns it,
// for EnvUpgrade; it is passed like the other descriptors.
func (fp *fdPass) writeState(st *upgradeState) (int, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return -1, fmt.Errorf("state: %w", err)
	}
	fd, err := unix.MemfdCreate("baton-upgrade-state", 0)
	if err != nil {
		return -1, fmt.Errorf("state: memfd: %w", err)
	}
	fp.mu.Lock()
	fp.dups = append(fp.dups, fd) // closed by fp.close when the exec fails
	fp.mu.Unlock()
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return -1, fmt.Errorf("state: %w", err)
		}
		b = b[n:]
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return -1, fmt.Errorf("state: %w", err)
	}
	return fd, nil
}

// Resumed is the state of the image of baton that execed this one, taken
// by TakeUpgrade: give it to New (Config.Resume), which goes on with its
// programs, generations and sockets instead of starting anew.
type Resumed struct {
	st *upgradeState
}

// TakeUpgrade takes the state the image of baton before this one passed
// (EnvUpgrade), if any, and returns nil, nil otherwise. Call it first
// thing in main: it unsets the variable and makes every descriptor passed
// close-on-exec, so that no process started from now on inherits them.
//
// Every generation of the old image is a child of this process: when
// TakeUpgrade fails, or the caller cannot go on with what it returned,
// exiting is the way out, and each child gets its stop signal from the
// kernel (its parent-death signal) and drains.
func TakeUpgrade() (*Resumed, error) {
	v, ok := os.LookupEnv(EnvUpgrade)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvUpgrade)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("upgrade: bad %s %q", EnvUpgrade, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "upgrade state")
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("upgrade: read the state: %w", err)
	}
	var st upgradeState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("upgrade: read the state: %w", err)
	}
	for _, d := range st.FDs {
		unix.CloseOnExec(d)
	}
	if st.Format != UpgradeFormat {
		return nil, fmt.Errorf("upgrade: state of format %d; this baton takes format %d", st.Format, UpgradeFormat)
	}
	return &Resumed{st: &st}, nil
}
