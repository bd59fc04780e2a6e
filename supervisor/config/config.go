// Package config is baton's config file: its schema, its defaults and its
// validation. Load parses and validates a whole file and returns either a
// complete File, with every default filled in and every relative path
// resolved against the file's directory, or diagnostics that carry their
// positions (config.hcl:4,3-15). Nothing here starts or opens anything.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// OutputToken in a build command is replaced by the path of the binary to
// write.
const OutputToken = "{output}"

// Readiness modes: how baton learns that a new generation serves.
const (
	ReadyNotify = "notify" // READY=1 on NOTIFY_SOCKET (the default)
	ReadyHTTP   = "http"   // GET on the program's listener answers 2xx
	ReadyDelay  = "delay"  // a fixed time after the start, if still running
)

// Program types.
const (
	TypeService = "service" // serves until stopped (the default)
	TypeOneshot = "oneshot" // runs once to completion: exit status 0 is success
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
	Health   HealthConfig  // the health block
	Programs []*Program    // in file order
	// ShutdownDelay is how long baton keeps every program serving, with
	// /readyz failing, between SIGTERM (or SIGINT) and the stop of its
	// programs: the time a load balancer needs to see /readyz fail and
	// stop sending new requests to this host. Default 0.
	ShutdownDelay time.Duration
	source        *Source // what it was parsed from
}

// Program returns the program block called name, or nil.
func (f *File) Program(name string) *Program {
	for _, p := range f.Programs {
		if p.Name == name {
			return p
		}
	}
	return nil
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

// HealthConfig is the health block: where baton serves /livez and
// /readyz for load balancers and orchestrators.
type HealthConfig struct {
	// Address is a TCP address; "" serves them on the metrics address,
	// or nowhere without a metrics block.
	Address string
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
	Name string // the block's label
	Type string // TypeService or TypeOneshot
	// After names the programs it starts after: once each serves, or, for
	// a one-shot, once it completed.
	After     []string
	Command   []string        // Command[0] is absolute, or a bare name looked up in PATH at start
	Dir       string          // absolute
	Env       []string        // KEY=VALUE, sorted, added to baton's environment: the env files', then env's
	EnvFiles  []string        // absolute: the env_file list, read into Env
	CleanEnv  bool            // start from an empty environment (but PATH) instead of baton's
	User      string          // run as this user (baton must run as root)
	Group     string          // and group; default the user's primary group
	Log       LogFile         // the program's output goes to this file instead of baton's log
	Listeners []Listener      // in file order: fds 3, 4, …
	Ready     ReadyConfig     // the ready block
	Stop      StopConfig      // the stop block
	Restart   RestartConfig   // the restart block
	Watch     ProgramWatch    // the program's watch block
	Build     *BuildConfig    // nil without a build block
	Bake      *BakeConfig     // nil without a bake block: a ready generation takes over at once
	Liveness  *LivenessConfig // nil without a liveness block
	Limits    LimitsConfig    // the limits block
	source    *Source         // the file it was parsed from; not part of its Fingerprint
}

// LivenessConfig is the liveness block: how baton tells that the serving
// generation hung. A hung generation is replaced by a handover, then
// stopped.
type LivenessConfig struct {
	Path     string        // an HTTP probe's path; "" for none
	Listener string        // the probe's listener
	Interval time.Duration // between probes
	Failures int           // probes in a row that fail before it counts as hung
	// Watchdog, when set, is systemd's watchdog: the program gets
	// WATCHDOG_USEC and must send WATCHDOG=1 at least that often.
	Watchdog time.Duration
}

// LimitsConfig is the limits block.
type LimitsConfig struct {
	// Memory is the resident memory (bytes) of a generation's process
	// group above which it is replaced by a handover; 0 for no limit.
	Memory   int64
	Interval time.Duration // how often memory is sampled
}

// BakeConfig is the bake block: after a handover's new generation is
// ready, both generations serve while the new one is judged; it takes
// over when it passed, and the old one goes on when it failed.
type BakeConfig struct {
	Duration time.Duration // how long the new generation is judged
	Interval time.Duration // how often: the probe, and the counters
	Path     string        // the probe's request path; "" for none
	Listener string        // the probe's listener
	// MaxErrors is the share of the new generation's requests that may
	// be answered 5xx (0.01: 1 %), from the counters it reports.
	MaxErrors float64
	// MaxP99 is how many times the old generation's p99 latency the new
	// one's may reach over the bake; 0: not compared. It is never judged
	// below 10 ms, nor on fewer than ten requests beyond the limit.
	MaxP99 float64
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
	// Debounce is the quiet time after the last source change before a
	// build.
	Debounce time.Duration
}

// Listener is a listener block: a socket baton opens once and passes to
// every generation under Name.
type Listener struct {
	Name    string // passed in LISTEN_FDNAMES
	Address string // "host:port" or "unix:/absolute/path"
}

// Key identifies the socket a listener of program needs: its address,
// except that every listener on port 0 ("any free port") gets a socket of
// its own, kept across reloads by program and listener name.
func (l Listener) Key(program string) string {
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
	// MoveIdle gives each generation a handoff socket, over which a
	// draining generation that uses the child package passes its idle
	// keep-alive connections to the serving one (see package handoff).
	MoveIdle bool
}

// RestartConfig is the restart block.
type RestartConfig struct {
	Policy     string        // RestartAlways, RestartOnFailure or RestartNever
	Backoff    time.Duration // the first wait, doubled after each failure
	MaxBackoff time.Duration // the longest wait
	ResetAfter time.Duration // uptime after which the waits start over
}

// WithBinary returns a copy of p that runs binary.
func (p *Program) WithBinary(binary string) *Program {
	c := *p
	c.Command = append([]string{binary}, p.Command[1:]...)
	return &c
}

// Fingerprint identifies what a program block asks of the process it
// starts. Two blocks with the same fingerprint start the same process
// (given the same binary): a reload leaves such a program alone.
//
// It hashes a canonical copy of the whole value, so that a field added to
// Program counts without anyone remembering to list it. Only what does not
// reach the process is left out: the watch block (what baton watches) and
// the build block (how baton dev builds; a changed build is rebuilt, and
// the new binary is what is handed over).
func (p *Program) Fingerprint() string {
	c := *p
	c.Watch, c.Build = ProgramWatch{}, nil
	b, err := json.Marshal(c)
	if err != nil {
		panic("config: fingerprint: " + err.Error()) // plain data: cannot fail
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// Error is a config file that does not validate. Its diagnostics carry
// positions (config.hcl:4,3-15).
type Error struct {
	Diags hcl.Diagnostics // errors and warnings
}

// Error lists the error diagnostics, one per line, with their positions.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid config:")
	for _, d := range e.Diags {
		if d.Severity == hcl.DiagError {
			b.WriteString("\n  " + FormatDiagnostic(d))
		}
	}
	return b.String()
}

// FormatDiagnostic renders a diagnostic as "file:line,col-col: summary;
// detail", the form editors and CI logs link.
func FormatDiagnostic(d *hcl.Diagnostic) string {
	msg := d.Summary
	if d.Detail != "" {
		msg += "; " + d.Detail
	}
	if d.Subject != nil {
		return d.Subject.String() + ": " + msg
	}
	return msg
}

// Load reads, parses and validates the config file at path. Any problem
// is a diagnostic with its position (config.hcl:4,3-15); warnings may
// come with a valid File.
func Load(path string) (*File, hcl.Diagnostics) {
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
	return Parse(src, path, filepath.Dir(abs))
}

// Parse parses and validates src, named filename in diagnostics, with
// relative paths resolved against dir.
func Parse(src []byte, filename, dir string) (*File, hcl.Diagnostics) {
	raw, body, diags := decode(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	v := validator{dir: dir}
	file := v.file(raw, filename, body)
	diags = append(diags, v.diags...)
	if diags.HasErrors() {
		return nil, diags
	}
	file.setSource(&Source{Path: filename, Dir: dir, Text: src})
	return file, diags
}

// decoded is the last source that parsed and decoded without an error.
// baton reads the same file again on every SIGHUP and `baton reload`,
// where the parse and the decode are most of the read (80 of 90 µs on
// an idle machine, 0.3 ms of a handover under load: BENCH.md, "A fifth
// look"). Only they are kept: the validation, which looks at the files,
// directories and users the config names, runs on every read, and reads
// the decoded file without changing it or keeping its slices.
var decoded struct {
	sync.Mutex
	src      []byte
	filename string
	raw      *rawFile
	body     *hclsyntax.Body
	diags    hcl.Diagnostics // its warnings
}

// decode parses and decodes src, or returns what the last call decoded
// when src and filename are the same.
func decode(src []byte, filename string) (*rawFile, *hclsyntax.Body, hcl.Diagnostics) {
	decoded.Lock()
	if decoded.raw != nil && decoded.filename == filename && bytes.Equal(decoded.src, src) {
		raw, body, diags := decoded.raw, decoded.body, slices.Clone(decoded.diags)
		decoded.Unlock()
		return raw, body, diags
	}
	decoded.Unlock()
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, nil, diags
	}
	raw := new(rawFile)
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, raw)...)
	if diags.HasErrors() {
		return nil, nil, diags
	}
	body := f.Body.(*hclsyntax.Body)
	decoded.Lock()
	decoded.src, decoded.filename, decoded.raw, decoded.body, decoded.diags = bytes.Clone(src), filename, raw, body, slices.Clone(diags)
	decoded.Unlock()
	return raw, body, diags
}

// ReservedEnv reports whether k is set by baton for each generation, and
// so cannot be set by a config file, nor passed on from baton's own
// environment.
func ReservedEnv(k string) bool {
	switch k {
	case protocol.EnvListenFDs, protocol.EnvListenPID, protocol.EnvListenFDNames, protocol.EnvNotifySocket,
		protocol.EnvProgram, protocol.EnvGeneration, protocol.EnvStopTimeout, protocol.EnvHandoffFD,
		protocol.EnvWatchdogUsec, protocol.EnvWatchdogPID, protocol.EnvStatsInterval, protocol.EnvListenParent:
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
