package config

import (
	"path/filepath"
	"syscall"
	"time"
)

// Defaults of config.hcl, in one place: every block and attribute but
// program, command and one listener is optional, and an attribute left out
// takes the value below.
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
	// The bake block's defaults: a new generation is judged for
	// DefaultBakeDuration, every DefaultBakeInterval; it may answer
	// DefaultBakeMaxErrors of its requests 5xx; its p99 latency is not
	// compared unless max_p99 is set.
	DefaultBakeDuration  = 30 * time.Second
	DefaultBakeInterval  = time.Second
	DefaultBakeMaxErrors = 0.01
	// The liveness block's defaults: probe every DefaultLivenessInterval,
	// replace the generation after DefaultLivenessFailures failures in a
	// row.
	DefaultLivenessInterval = 10 * time.Second
	DefaultLivenessFailures = 3
	// DefaultLimitsInterval is how often the limits block samples a
	// generation's memory.
	DefaultLimitsInterval = 5 * time.Second
	// DefaultHungQuitGrace is how long a hung generation has, after the
	// SIGQUIT that makes a Go program print its goroutines' stacks, before
	// its SIGKILL.
	DefaultHungQuitGrace = 2 * time.Second
	// DefaultBuildDebounce is the quiet time after a source change before
	// baton dev builds: an editor's save is over in a few milliseconds,
	// and a change during a build cancels it, so waiting longer only adds
	// to save → serving. Binaries and the config file keep
	// DefaultDebounce: a deploy tool may take longer to finish.
	DefaultBuildDebounce = 30 * time.Millisecond
	// DefaultBuildGoFlags is added to the environment of builds whose
	// environment sets no GOFLAGS: dev builds leave out DWARF, which
	// makes the link of a one-line change about a third faster (set
	// GOFLAGS = "" in the build block to keep it).
	DefaultBuildGoFlags = "-ldflags=-w"
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

// DefaultBuildInclude are the file name globs that count as sources when
// a build block sets no include.
var DefaultBuildInclude = []string{"*.go", "go.mod", "go.sum"}

// defaultFile is a config file with nothing set, for a file in dir.
func defaultFile(dir string) *File {
	return &File{
		Dir:     dir,
		Log:     LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Watch:   WatchConfig{Enabled: true, Config: true, Debounce: DefaultDebounce},
		Control: ControlConfig{Enabled: true, Socket: filepath.Join(dir, DefaultControlSocket)},
	}
}

// defaultProgram is a program block with nothing set but its name.
func defaultProgram(name, dir string) *Program {
	return &Program{
		Name:    name,
		Type:    TypeService,
		Dir:     dir,
		Ready:   ReadyConfig{Mode: ReadyNotify, Timeout: DefaultReadyTimeout},
		Stop:    StopConfig{Signal: DefaultStopSignal, Timeout: DefaultStopTimeout, MoveIdle: true},
		Restart: RestartConfig{Policy: DefaultRestart, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff, ResetAfter: DefaultResetAfter},
		Watch:   ProgramWatch{Enabled: true},
		Limits:  LimitsConfig{Interval: DefaultLimitsInterval},
	}
}

// defaultLiveness is a liveness block with nothing set.
func defaultLiveness() *LivenessConfig {
	return &LivenessConfig{Interval: DefaultLivenessInterval, Failures: DefaultLivenessFailures}
}

// defaultLogFile is a log block with no file.
func defaultLogFile() LogFile {
	return LogFile{MaxSize: DefaultLogMaxSize, MaxFiles: DefaultLogMaxFiles}
}

// defaultBake is a bake block with nothing set.
func defaultBake() *BakeConfig {
	return &BakeConfig{Duration: DefaultBakeDuration, Interval: DefaultBakeInterval, MaxErrors: DefaultBakeMaxErrors}
}

// defaultBuild is a build block with only its command, for sources in dir.
func defaultBuild(dir string) *BuildConfig {
	return &BuildConfig{Dir: dir, Include: DefaultBuildInclude, Watch: []string{dir}, Debounce: DefaultBuildDebounce}
}
