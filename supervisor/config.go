package supervisor

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Defaults of config.hcl. Every block and attribute but program, command
// and one listener is optional.
const (
	DefaultConfigFile   = "config.hcl"
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopSignal   = syscall.SIGTERM
	DefaultStopTimeout  = 30 * time.Second
	DefaultRestart      = RestartAlways
	DefaultBackoff      = 1 * time.Second
	DefaultMaxBackoff   = 30 * time.Second
	DefaultResetAfter   = 60 * time.Second
	DefaultDebounce     = 300 * time.Millisecond
	// DefaultControlSocket is the control socket, relative to the config
	// file's directory.
	DefaultControlSocket = ".baton/control.sock"
	DefaultLogMaxSize    = 10 << 20 // bytes, for log files
	DefaultLogMaxFiles   = 5        // rotated files kept besides the current one
	// DefaultBuildDir is where baton dev writes each build's binary,
	// relative to the config file: a fresh path for every build, never
	// over a binary that runs.
	DefaultBuildDir = ".baton/build"
)

// OutputToken in a build command is replaced by the path of the binary to
// write.
const OutputToken = "{output}"

// Defaults of a build block.
var (
	DefaultBuildInclude = []string{"*.go", "go.mod", "go.sum"}
	// Directories never watched for source changes.
	skippedDirs = []string{".git", ".hg", ".svn", "node_modules", "vendor", ".baton"}
)

// Readiness modes: how baton learns that a new generation serves.
const (
	ReadyNotify = "notify" // READY=1 on NOTIFY_SOCKET (the default)
	ReadyHTTP   = "http"   // GET on the program's listener answers 2xx
	ReadyDelay  = "delay"  // a fixed time after the start, if still running
)

// Restart policies: what happens when the serving generation exits on its
// own.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// File is a parsed and validated config file. Relative paths in it have
// been resolved against Dir, the directory that holds the file.
type File struct {
	Path     string        // as given, for messages
	Dir      string        // absolute
	Log      LogConfig     // the log block
	Watch    WatchConfig   // the top-level watch block
	Control  ControlConfig // the control block
	Metrics  MetricsConfig // the metrics block
	Programs []*Program    // in file order
}

// ControlConfig is the control block: the socket of baton's CLI.
type ControlConfig struct {
	Enabled bool   // false: no control socket
	Socket  string // absolute path
}

// MetricsConfig is the metrics block: Prometheus metrics over HTTP.
type MetricsConfig struct {
	Address string // "" when off
}

// LogFile is a log file with size-based rotation: when a write would
// take it past MaxSize, it is renamed to .1 (.1 to .2, …) and the oldest
// beyond MaxFiles is removed.
type LogFile struct {
	Path     string // absolute; "" for none
	MaxSize  int64  // bytes
	MaxFiles int    // rotated files kept
}

// WatchConfig is the top-level watch block: what baton watches by itself.
type WatchConfig struct {
	Enabled  bool          // false turns every watch off
	Config   bool          // the config file itself
	Debounce time.Duration // quiet time after the last change of a path
	Poll     time.Duration // > 0: poll at this interval instead of fsnotify
}

// LogConfig is the log block: baton's own log.
type LogConfig struct {
	Level    string  // trace, debug, info, warn, error
	Format   string  // text or json
	LevelSet bool    // the file sets the level (baton dev otherwise keeps its own events quiet)
	File     LogFile // baton's own log file; none when File.Path is ""
}

// Program is a program block.
type Program struct {
	Name      string        // the block's label
	Command   []string      // Command[0] is absolute, or a bare name looked up in PATH at start
	Dir       string        // absolute
	Env       []string      // KEY=VALUE, sorted, added to baton's environment
	CleanEnv  bool          // start from an empty environment (but PATH) instead of baton's
	User      string        // run as this user (baton must run as root)
	Group     string        // and group; default the user's primary group
	Log       LogFile       // the program's output goes to this file instead of baton's log
	Listeners []Listener    // in file order: fds 3, 4, …
	Ready     ReadyConfig   // the ready block
	Stop      StopConfig    // the stop block
	Restart   RestartConfig // the restart block
	Watch     ProgramWatch  // the program's watch block
	Build     *BuildConfig  // nil without a build block
}

// ProgramWatch is a program's watch block.
type ProgramWatch struct {
	Enabled bool     // watch the binary (baton run) or the sources (baton dev)
	Paths   []string // absolute; more files or directories whose change hands the program over
}

// BuildConfig is a program's build block, used by baton dev.
type BuildConfig struct {
	Command []string // argv with OutputToken where the binary goes
	Dir     string   // absolute working directory
	Env     []string // KEY=VALUE added to baton's environment
	Watch   []string // absolute files and directories, watched recursively
	Include []string // file name globs that count as sources
	Exclude []string // globs of files and directories to skip
}

// Listener is a listener block: a socket baton opens once and passes to
// every generation under Name.
type Listener struct {
	Name    string // passed in LISTEN_FDNAMES
	Address string // "host:port" or "unix:/absolute/path"
}

// key identifies the socket a listener needs: its address, except that
// every listener on port 0 ("any free port") gets a socket of its own,
// kept across reloads by program and listener name.
func (l Listener) key(program string) string {
	if strings.HasSuffix(l.Address, ":0") {
		return l.Address + "#" + program + "." + l.Name
	}
	return l.Address
}

// ReadyConfig is the ready block.
type ReadyConfig struct {
	Mode     string        // ReadyNotify, ReadyHTTP or ReadyDelay
	Timeout  time.Duration // to become ready, from the start
	Path     string        // ReadyHTTP: the request path
	Listener string        // ReadyHTTP: the listener to send it to
	Delay    time.Duration // ReadyDelay
}

// StopConfig is the stop block.
type StopConfig struct {
	Signal  syscall.Signal // sent to the process group
	Timeout time.Duration  // then SIGKILL to the group
}

// RestartConfig is the restart block.
type RestartConfig struct {
	Policy     string        // RestartAlways, RestartOnFailure or RestartNever
	Backoff    time.Duration // the first wait, doubled after each failure
	MaxBackoff time.Duration // the longest wait
	ResetAfter time.Duration // uptime after which the waits start over
}

// The raw HCL schema. No ",remain": an unknown attribute or block is an
// error with its position.
type rawFile struct {
	Log      *rawLog      `hcl:"log,block"`
	Watch    *rawWatch    `hcl:"watch,block"`
	Control  *rawControl  `hcl:"control,block"`
	Metrics  *rawMetrics  `hcl:"metrics,block"`
	Programs []rawProgram `hcl:"program,block"`
}

type rawControl struct {
	Enabled     *bool     `hcl:"enabled,optional"`
	Socket      *string   `hcl:"socket,optional"`
	SocketRange hcl.Range `hcl:"socket,attr_value_range"`
}

type rawMetrics struct {
	Address      string    `hcl:"address"`
	AddressRange hcl.Range `hcl:"address,attr_value_range"`
}

// rawLogFile is the part of a log block that sets a file.
type rawLogFile struct {
	File          *string   `hcl:"file,optional"`
	FileRange     hcl.Range `hcl:"file,attr_value_range"`
	MaxSize       *string   `hcl:"max_size,optional"`
	MaxSizeRange  hcl.Range `hcl:"max_size,attr_value_range"`
	MaxFiles      *int      `hcl:"max_files,optional"`
	MaxFilesRange hcl.Range `hcl:"max_files,attr_value_range"`
}

type rawWatch struct {
	Enabled       *bool     `hcl:"enabled,optional"`
	Config        *bool     `hcl:"config,optional"`
	Debounce      *string   `hcl:"debounce,optional"`
	DebounceRange hcl.Range `hcl:"debounce,attr_value_range"`
	Poll          *string   `hcl:"poll,optional"`
	PollRange     hcl.Range `hcl:"poll,attr_value_range"`
}

type rawProgramWatch struct {
	Enabled    *bool     `hcl:"enabled,optional"`
	Paths      []string  `hcl:"paths,optional"`
	PathsRange hcl.Range `hcl:"paths,attr_value_range"`
}

type rawBuild struct {
	DefRange     hcl.Range         `hcl:",def_range"`
	Command      []string          `hcl:"command"`
	CommandRange hcl.Range         `hcl:"command,attr_value_range"`
	Dir          *string           `hcl:"dir,optional"`
	Env          map[string]string `hcl:"env,optional"`
	EnvRange     hcl.Range         `hcl:"env,attr_value_range"`
	Watch        []string          `hcl:"watch,optional"`
	WatchRange   hcl.Range         `hcl:"watch,attr_value_range"`
	Include      []string          `hcl:"include,optional"`
	IncludeRange hcl.Range         `hcl:"include,attr_value_range"`
	Exclude      []string          `hcl:"exclude,optional"`
	ExcludeRange hcl.Range         `hcl:"exclude,attr_value_range"`
}

type rawLog struct {
	Level         *string   `hcl:"level,optional"`
	LevelRange    hcl.Range `hcl:"level,attr_value_range"`
	Format        *string   `hcl:"format,optional"`
	FormatRange   hcl.Range `hcl:"format,attr_value_range"`
	File          *string   `hcl:"file,optional"`
	FileRange     hcl.Range `hcl:"file,attr_value_range"`
	MaxSize       *string   `hcl:"max_size,optional"`
	MaxSizeRange  hcl.Range `hcl:"max_size,attr_value_range"`
	MaxFiles      *int      `hcl:"max_files,optional"`
	MaxFilesRange hcl.Range `hcl:"max_files,attr_value_range"`
}

type rawProgram struct {
	Name         string            `hcl:"name,label"`
	NameRange    hcl.Range         `hcl:"name,label_range"`
	DefRange     hcl.Range         `hcl:",def_range"`
	Command      []string          `hcl:"command"`
	CommandRange hcl.Range         `hcl:"command,attr_value_range"`
	Dir          *string           `hcl:"dir,optional"`
	DirRange     hcl.Range         `hcl:"dir,attr_value_range"`
	Env          map[string]string `hcl:"env,optional"`
	EnvRange     hcl.Range         `hcl:"env,attr_value_range"`
	CleanEnv     *bool             `hcl:"clean_env,optional"`
	User         *string           `hcl:"user,optional"`
	UserRange    hcl.Range         `hcl:"user,attr_value_range"`
	Group        *string           `hcl:"group,optional"`
	GroupRange   hcl.Range         `hcl:"group,attr_value_range"`
	Log          *rawLogFile       `hcl:"log,block"`
	Listeners    []rawListener     `hcl:"listener,block"`
	Ready        *rawReady         `hcl:"ready,block"`
	Stop         *rawStop          `hcl:"stop,block"`
	Restart      *rawRestart       `hcl:"restart,block"`
	Watch        *rawProgramWatch  `hcl:"watch,block"`
	Build        *rawBuild         `hcl:"build,block"`
}

type rawListener struct {
	Name         string    `hcl:"name,label"`
	NameRange    hcl.Range `hcl:"name,label_range"`
	Address      string    `hcl:"address"`
	AddressRange hcl.Range `hcl:"address,attr_value_range"`
}

type rawReady struct {
	DefRange      hcl.Range `hcl:",def_range"`
	Timeout       *string   `hcl:"timeout,optional"`
	TimeoutRange  hcl.Range `hcl:"timeout,attr_value_range"`
	HTTP          *string   `hcl:"http,optional"`
	HTTPRange     hcl.Range `hcl:"http,attr_value_range"`
	Listener      *string   `hcl:"listener,optional"`
	ListenerRange hcl.Range `hcl:"listener,attr_value_range"`
	Delay         *string   `hcl:"delay,optional"`
	DelayRange    hcl.Range `hcl:"delay,attr_value_range"`
}

type rawStop struct {
	Signal       *string   `hcl:"signal,optional"`
	SignalRange  hcl.Range `hcl:"signal,attr_value_range"`
	Timeout      *string   `hcl:"timeout,optional"`
	TimeoutRange hcl.Range `hcl:"timeout,attr_value_range"`
}

type rawRestart struct {
	Policy          *string   `hcl:"policy,optional"`
	PolicyRange     hcl.Range `hcl:"policy,attr_value_range"`
	Backoff         *string   `hcl:"backoff,optional"`
	BackoffRange    hcl.Range `hcl:"backoff,attr_value_range"`
	MaxBackoff      *string   `hcl:"max_backoff,optional"`
	MaxBackoffRange hcl.Range `hcl:"max_backoff,attr_value_range"`
	ResetAfter      *string   `hcl:"reset_after,optional"`
	ResetAfterRange hcl.Range `hcl:"reset_after,attr_value_range"`
}

// LoadFile reads, parses and validates the config file at path. Any
// problem is a diagnostic with its position (config.hcl:4,3-15); warnings
// may come with a valid File.
func LoadFile(path string) (*File, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read the config file",
			Detail:   fmt.Sprintf("%v. Pass another file with -config FILE.", err),
		}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot resolve the config path", Detail: err.Error()}}
	}
	return ParseConfig(src, path, filepath.Dir(abs))
}

// ParseConfig parses and validates src, named filename in diagnostics,
// with relative paths resolved against dir.
func ParseConfig(src []byte, filename, dir string) (*File, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	var raw rawFile
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, &raw)...)
	if diags.HasErrors() {
		return nil, diags
	}
	v := validator{dir: dir}
	file := v.file(&raw, filename, f.Body.(*hclsyntax.Body))
	diags = append(diags, v.diags...)
	if diags.HasErrors() {
		return nil, diags
	}
	return file, diags
}

type validator struct {
	dir   string
	diags hcl.Diagnostics
}

func (v *validator) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	v.diags = append(v.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	})
}

func (v *validator) warnf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	v.diags = append(v.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	})
}

func (v *validator) file(raw *rawFile, filename string, body *hclsyntax.Body) *File {
	f := &File{Path: filename, Dir: v.dir, Log: LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Watch: WatchConfig{Enabled: true, Config: true, Debounce: DefaultDebounce}}
	if w := raw.Watch; w != nil {
		if w.Enabled != nil {
			f.Watch.Enabled = *w.Enabled
		}
		if w.Config != nil {
			f.Watch.Config = *w.Config
		}
		f.Watch.Debounce = v.duration(w.Debounce, w.DebounceRange, DefaultDebounce, true)
		f.Watch.Poll = v.duration(w.Poll, w.PollRange, 0, true)
		if f.Watch.Poll > 0 && f.Watch.Poll < 10*time.Millisecond {
			v.errorf(w.PollRange, "Poll interval too short", "poll %v would keep a core busy; use at least 10ms (1s is usual).", f.Watch.Poll)
		}
	}
	f.Control = ControlConfig{Enabled: true, Socket: v.path(DefaultControlSocket)}
	if c := raw.Control; c != nil {
		if c.Enabled != nil {
			f.Control.Enabled = *c.Enabled
		}
		if c.Socket != nil {
			f.Control.Socket = v.path(*c.Socket)
			if *c.Socket == "" {
				v.errorf(c.SocketRange, "Empty socket path", "socket is the path of the control socket; use enabled = false to have none.")
			}
		}
	}
	if len(f.Control.Socket) > 107 {
		r := body.SrcRange
		if raw.Control != nil && raw.Control.Socket != nil {
			r = raw.Control.SocketRange
		}
		v.errorf(r, "Control socket path too long", "%s is %d bytes; unix socket paths are limited to 107. Set control { socket = \"/run/baton.sock\" } or a shorter path.", f.Control.Socket, len(f.Control.Socket))
	}
	if m := raw.Metrics; m != nil {
		addr, err := v.address(m.Address)
		if err != nil || strings.HasPrefix(addr, "unix:") {
			v.errorf(m.AddressRange, "Invalid metrics address", "%q: metrics are served on a TCP address such as \"127.0.0.1:9090\".", m.Address)
		}
		f.Metrics.Address = addr
	}
	if l := raw.Log; l != nil {
		f.Log.File = v.logFile(&rawLogFile{l.File, l.FileRange, l.MaxSize, l.MaxSizeRange, l.MaxFiles, l.MaxFilesRange})
		if l.Level != nil {
			switch lv := strings.ToLower(*l.Level); lv {
			case "trace", "debug", "info", "warn", "error":
				f.Log.Level, f.Log.LevelSet = lv, true
			default:
				v.errorf(l.LevelRange, "Invalid log level", "%q is not a log level; use trace, debug, info, warn or error.", *l.Level)
			}
		}
		if l.Format != nil {
			switch *l.Format {
			case "text", "json":
				f.Log.Format = *l.Format
			default:
				v.errorf(l.FormatRange, "Invalid log format", "%q is not a log format; use \"text\" or \"json\".", *l.Format)
			}
		}
	}
	if len(raw.Programs) == 0 {
		v.errorf(body.SrcRange, "No program", `The file declares no program block; add one, for example: program "web" { command = ["./bin/web"] listener "http" { address = "127.0.0.1:8080" } }.`)
	}
	names := map[string]hcl.Range{}
	addrs := map[string]string{}
	for i := range raw.Programs {
		rp := &raw.Programs[i]
		if prev, dup := names[rp.Name]; dup {
			v.errorf(rp.NameRange, "Duplicate program", "A program named %q is already declared at %s.", rp.Name, prev)
			continue
		}
		names[rp.Name] = rp.NameRange
		p := v.program(rp)
		for j, l := range p.Listeners {
			k := l.key(p.Name)
			if other, dup := addrs[k]; dup {
				v.errorf(rp.Listeners[j].AddressRange, "Address used twice", "%s is already the address of %s; each listener needs its own address.", l.Address, other)
			}
			addrs[k] = fmt.Sprintf("listener %q of program %q", l.Name, p.Name)
		}
		f.Programs = append(f.Programs, p)
	}
	return f
}

func (v *validator) program(rp *rawProgram) *Program {
	p := &Program{Name: rp.Name, Dir: v.dir}
	if !validProgramName(rp.Name) {
		v.errorf(rp.NameRange, "Invalid program name", "%q: a program name is 1 to 64 letters, digits, '-', '_' or '.'.", rp.Name)
	}
	if len(rp.Command) == 0 || rp.Command[0] == "" {
		v.errorf(rp.CommandRange, "Empty command", `command is the program's argv, for example ["./bin/web", "-flag"].`)
	} else {
		p.Command = append([]string(nil), rp.Command...)
		if strings.Contains(p.Command[0], "/") {
			p.Command[0] = v.path(p.Command[0])
		}
	}
	if rp.Dir != nil {
		p.Dir = v.path(*rp.Dir)
		if st, err := os.Stat(p.Dir); err != nil || !st.IsDir() {
			v.warnf(rp.DirRange, "Directory not found", "%s is not a directory (yet); the program cannot start until it is.", p.Dir)
		}
	}
	for k, val := range rp.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.errorf(rp.EnvRange, "Invalid environment variable", "%q cannot be the name of an environment variable.", k)
			continue
		}
		if reservedEnv(k) {
			v.errorf(rp.EnvRange, "Reserved environment variable", "%s is set by baton for each generation and cannot be set in env.", k)
			continue
		}
		p.Env = append(p.Env, k+"="+val)
	}
	sort.Strings(p.Env)
	if rp.CleanEnv != nil {
		p.CleanEnv = *rp.CleanEnv
	}
	if rp.User != nil {
		p.User = *rp.User
		if _, err := lookupUser(p.User); err != nil {
			v.errorf(rp.UserRange, "Unknown user", "%v.", err)
		} else if os.Geteuid() != 0 {
			if u, _ := lookupUser(p.User); u == nil || u.Uid != strconv.Itoa(os.Geteuid()) {
				v.errorf(rp.UserRange, "User needs root", "Running program %q as %q needs baton to run as root; it runs as uid %d.", rp.Name, p.User, os.Geteuid())
			}
		}
	}
	if rp.Group != nil {
		p.Group = *rp.Group
		if _, err := lookupGroup(p.Group); err != nil {
			v.errorf(rp.GroupRange, "Unknown group", "%v.", err)
		}
		if rp.User == nil {
			v.errorf(rp.GroupRange, "Group without user", "group applies with user; set user too.")
		}
	}
	if rp.Log != nil {
		p.Log = v.logFile(rp.Log)
	}

	if len(rp.Listeners) == 0 {
		v.errorf(rp.DefRange, "No listener", `Program %q needs at least one listener block, for example listener "http" { address = "127.0.0.1:8080" }.`, rp.Name)
	}
	seen := map[string]bool{}
	for _, rl := range rp.Listeners {
		if !protocol.ValidName(rl.Name) {
			v.errorf(rl.NameRange, "Invalid listener name", "%q: a listener name is up to 255 printable characters without spaces or ':' (it travels in LISTEN_FDNAMES).", rl.Name)
		}
		if seen[rl.Name] {
			v.errorf(rl.NameRange, "Duplicate listener", "Program %q already has a listener named %q.", rp.Name, rl.Name)
		}
		seen[rl.Name] = true
		addr, err := v.address(rl.Address)
		if err != nil {
			v.errorf(rl.AddressRange, "Invalid listener address", "%v", err)
		}
		p.Listeners = append(p.Listeners, Listener{Name: rl.Name, Address: addr})
	}

	p.Ready = ReadyConfig{Mode: ReadyNotify, Timeout: DefaultReadyTimeout}
	if r := rp.Ready; r != nil {
		p.Ready.Timeout = v.duration(r.Timeout, r.TimeoutRange, DefaultReadyTimeout, false)
		if r.HTTP != nil && r.Delay != nil {
			v.errorf(r.DelayRange, "Conflicting readiness", "Use either http or delay in a ready block, not both.")
		}
		if r.HTTP != nil {
			p.Ready.Mode = ReadyHTTP
			p.Ready.Path = *r.HTTP
			if !strings.HasPrefix(p.Ready.Path, "/") {
				v.errorf(r.HTTPRange, "Invalid health path", "%q: http is a request path such as \"/healthz\".", *r.HTTP)
			}
			p.Ready.Listener = ""
			if len(p.Listeners) > 0 {
				p.Ready.Listener = p.Listeners[0].Name
			}
			if r.Listener != nil {
				p.Ready.Listener = *r.Listener
				if !seen[*r.Listener] {
					v.errorf(r.ListenerRange, "Unknown listener", "Program %q has no listener named %q.", rp.Name, *r.Listener)
				}
			}
			for _, l := range p.Listeners {
				if l.Name == p.Ready.Listener && strings.HasPrefix(l.Address, "unix:") {
					v.warnf(r.HTTPRange, "HTTP readiness on a unix socket", "During a handover baton cannot tell which generation answered on %s: the old one may answer for a new one that is not ready. Prefer notify readiness, or check a TCP listener.", l.Address)
				}
			}
		} else if r.Listener != nil {
			v.errorf(r.ListenerRange, "Listener without http", "listener only applies to an http readiness check.")
		}
		if r.Delay != nil {
			p.Ready.Mode = ReadyDelay
			p.Ready.Delay = v.duration(r.Delay, r.DelayRange, 0, true)
			if p.Ready.Delay >= p.Ready.Timeout {
				v.errorf(r.DelayRange, "Delay beyond the ready timeout", "delay %v must be shorter than the ready timeout %v.", p.Ready.Delay, p.Ready.Timeout)
			}
		}
	}

	p.Stop = StopConfig{Signal: DefaultStopSignal, Timeout: DefaultStopTimeout}
	if s := rp.Stop; s != nil {
		if s.Signal != nil {
			sig, ok := signalByName(*s.Signal)
			if !ok {
				v.errorf(s.SignalRange, "Unknown signal", "%q is not a signal name; use one such as \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\".", *s.Signal)
			}
			p.Stop.Signal = sig
		}
		p.Stop.Timeout = v.duration(s.Timeout, s.TimeoutRange, DefaultStopTimeout, false)
	}

	p.Restart = RestartConfig{Policy: DefaultRestart, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff, ResetAfter: DefaultResetAfter}
	if r := rp.Restart; r != nil {
		if r.Policy != nil {
			switch *r.Policy {
			case RestartAlways, RestartOnFailure, RestartNever:
				p.Restart.Policy = *r.Policy
			default:
				v.errorf(r.PolicyRange, "Invalid restart policy", "%q: use \"always\", \"on-failure\" or \"never\".", *r.Policy)
			}
		}
		p.Restart.Backoff = v.duration(r.Backoff, r.BackoffRange, DefaultBackoff, false)
		p.Restart.MaxBackoff = v.duration(r.MaxBackoff, r.MaxBackoffRange, DefaultMaxBackoff, false)
		p.Restart.ResetAfter = v.duration(r.ResetAfter, r.ResetAfterRange, DefaultResetAfter, false)
		if p.Restart.MaxBackoff < p.Restart.Backoff {
			v.errorf(r.MaxBackoffRange, "max_backoff below backoff", "max_backoff %v is shorter than backoff %v.", p.Restart.MaxBackoff, p.Restart.Backoff)
		}
	}

	p.Watch = ProgramWatch{Enabled: true}
	if w := rp.Watch; w != nil {
		if w.Enabled != nil {
			p.Watch.Enabled = *w.Enabled
		}
		for _, path := range w.Paths {
			if path == "" {
				v.errorf(w.PathsRange, "Empty path", "paths lists files or directories to watch; an empty string is not one.")
				continue
			}
			p.Watch.Paths = append(p.Watch.Paths, v.path(path))
		}
	}
	if b := rp.Build; b != nil {
		p.Build = v.build(b, p)
	}
	return p
}

func (v *validator) logFile(r *rawLogFile) LogFile {
	lf := LogFile{MaxSize: DefaultLogMaxSize, MaxFiles: DefaultLogMaxFiles}
	if r.File != nil {
		if *r.File == "" {
			v.errorf(r.FileRange, "Empty log file", "file is a path such as \"logs/web.log\"; leave it out for none.")
		}
		lf.Path = v.path(*r.File)
	}
	if r.MaxSize != nil {
		n, err := parseSize(*r.MaxSize)
		if err != nil || n < 4096 {
			v.errorf(r.MaxSizeRange, "Invalid size", "%q: write a size of at least 4KB, such as \"10MB\" or \"512KB\".", *r.MaxSize)
		} else {
			lf.MaxSize = n
		}
	}
	if r.MaxFiles != nil {
		if *r.MaxFiles < 0 || *r.MaxFiles > 1000 {
			v.errorf(r.MaxFilesRange, "Invalid max_files", "max_files is how many rotated files to keep, 0 to 1000.")
		} else {
			lf.MaxFiles = *r.MaxFiles
		}
	}
	if lf.Path == "" && (r.MaxSize != nil || r.MaxFiles != nil) {
		v.errorf(r.MaxSizeRange, "Rotation without a file", "max_size and max_files apply to a log file: set file too.")
	}
	return lf
}

// parseSize parses "10MB", "512KB", "1GiB" or a number of bytes. KB, MB
// and GB are powers of 1024, like KiB, MiB and GiB.
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return n * mult, nil
}

func (v *validator) build(b *rawBuild, p *Program) *BuildConfig {
	bc := &BuildConfig{Command: b.Command, Dir: v.dir, Include: DefaultBuildInclude, Watch: []string{v.dir}}
	has := false
	for _, a := range b.Command {
		has = has || strings.Contains(a, OutputToken)
	}
	switch {
	case len(b.Command) == 0 || b.Command[0] == "":
		v.errorf(b.CommandRange, "Empty build command", `command is the build's argv, for example ["go", "build", "-o", "{output}", "."].`)
	case !has:
		v.errorf(b.CommandRange, "Build output not named", `The build command must write the binary to %s, which baton replaces with a fresh path for each build, for example ["go", "build", "-o", "{output}", "."].`, OutputToken)
	}
	if b.Dir != nil {
		bc.Dir = v.path(*b.Dir)
	}
	for k, val := range b.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.errorf(b.EnvRange, "Invalid environment variable", "%q cannot be the name of an environment variable.", k)
			continue
		}
		bc.Env = append(bc.Env, k+"="+val)
	}
	sort.Strings(bc.Env)
	if b.Watch != nil {
		bc.Watch = nil
		for _, w := range b.Watch {
			bc.Watch = append(bc.Watch, v.path(w))
		}
		if len(bc.Watch) == 0 {
			v.errorf(b.WatchRange, "Nothing to watch", "watch lists the directories and files of the sources, for example [\".\"].")
		}
	}
	check := func(globs []string, rng hcl.Range) []string {
		for _, g := range globs {
			if _, err := filepath.Match(strings.TrimPrefix(g, "**/"), "x"); err != nil || g == "" {
				v.errorf(rng, "Invalid glob", "%q is not a valid pattern: use * and ? within a name, as in \"*.go\" or \"web/*.tmpl\".", g)
			}
		}
		return globs
	}
	if b.Include != nil {
		bc.Include = check(b.Include, b.IncludeRange)
	}
	bc.Exclude = check(b.Exclude, b.ExcludeRange)
	return bc
}

// duration parses an optional duration attribute; zero is allowed only
// where allowZero says so.
func (v *validator) duration(s *string, rng hcl.Range, def time.Duration, allowZero bool) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		v.errorf(rng, "Invalid duration", "%q is not a duration; write it like \"300ms\", \"10s\" or \"1m30s\".", *s)
		return def
	}
	if d < 0 || (d == 0 && !allowZero) {
		v.errorf(rng, "Invalid duration", "%q must be greater than zero.", *s)
		return def
	}
	return d
}

// path resolves p against the config file's directory.
func (v *validator) path(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(v.dir, p)
}

// address validates a listener address and resolves a relative unix path.
func (v *validator) address(a string) (string, error) {
	if rest, ok := strings.CutPrefix(a, "unix:"); ok {
		if rest == "" {
			return a, fmt.Errorf("%q: a unix listener needs a path, as in \"unix:/run/web.sock\"", a)
		}
		p := v.path(rest)
		if len(p) > 107 {
			return a, fmt.Errorf("%q: the socket path is %d bytes long; unix socket paths are limited to 107", a, len(p))
		}
		return "unix:" + p, nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a, fmt.Errorf("%q is not an address: write \"host:port\" such as \"127.0.0.1:8080\", or \"unix:/path\"", a)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return a, fmt.Errorf("%q: the host must be an IP address or localhost (baton binds it; it does not resolve names)", a)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return a, fmt.Errorf("%q: %q is not a port", a, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func validProgramName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func reservedEnv(k string) bool {
	switch k {
	case protocol.EnvListenFDs, protocol.EnvListenPID, protocol.EnvListenFDNames, protocol.EnvNotifySocket,
		protocol.EnvProgram, protocol.EnvGeneration, protocol.EnvStopTimeout:
		return true
	}
	return false
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGKILL": syscall.SIGKILL, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGTERM": syscall.SIGTERM, "SIGWINCH": syscall.SIGWINCH,
}

// signalByName accepts "SIGTERM", "TERM" and "sigterm".
func signalByName(name string) (syscall.Signal, bool) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	s, ok := signals[n]
	return s, ok
}

// SignalName returns the name of s, such as "SIGTERM".
func SignalName(s syscall.Signal) string {
	for n, v := range signals {
		if v == s {
			return n
		}
	}
	return s.String()
}
