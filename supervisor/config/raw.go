package config

import "github.com/hashicorp/hcl/v2"

// The raw HCL schema, decoded by gohcl. Optional attributes are pointers,
// so that "left out" and "set to the zero value" differ, and each has its
// range for diagnostics. No ",remain": an unknown attribute or block is an
// error with its position. gohcl needs one flat struct per block, which
// is why the log attributes appear twice.
type rawFile struct {
	Log      *rawLog      `hcl:"log,block"`
	Watch    *rawWatch    `hcl:"watch,block"`
	Control  *rawControl  `hcl:"control,block"`
	Metrics  *rawMetrics  `hcl:"metrics,block"`
	Health   *rawHealth   `hcl:"health,block"`
	Programs []rawProgram `hcl:"program,block"`

	ShutdownDelay      *string   `hcl:"shutdown_delay,optional"`
	ShutdownDelayRange hcl.Range `hcl:"shutdown_delay,attr_value_range"`
}

type rawHealth struct {
	Address      string    `hcl:"address"`
	AddressRange hcl.Range `hcl:"address,attr_value_range"`
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
	DefRange      hcl.Range         `hcl:",def_range"`
	Command       []string          `hcl:"command"`
	CommandRange  hcl.Range         `hcl:"command,attr_value_range"`
	Dir           *string           `hcl:"dir,optional"`
	Env           map[string]string `hcl:"env,optional"`
	EnvRange      hcl.Range         `hcl:"env,attr_value_range"`
	Watch         []string          `hcl:"watch,optional"`
	WatchRange    hcl.Range         `hcl:"watch,attr_value_range"`
	Include       []string          `hcl:"include,optional"`
	IncludeRange  hcl.Range         `hcl:"include,attr_value_range"`
	Exclude       []string          `hcl:"exclude,optional"`
	ExcludeRange  hcl.Range         `hcl:"exclude,attr_value_range"`
	Debounce      *string           `hcl:"debounce,optional"`
	DebounceRange hcl.Range         `hcl:"debounce,attr_value_range"`
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

func (l *rawLog) logFile() *rawLogFile {
	return &rawLogFile{l.File, l.FileRange, l.MaxSize, l.MaxSizeRange, l.MaxFiles, l.MaxFilesRange}
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
	EnvFile      []string          `hcl:"env_file,optional"`
	EnvFileRange hcl.Range         `hcl:"env_file,attr_value_range"`
	CleanEnv     *bool             `hcl:"clean_env,optional"`
	Type         *string           `hcl:"type,optional"`
	TypeRange    hcl.Range         `hcl:"type,attr_value_range"`
	After        []string          `hcl:"after,optional"`
	AfterRange   hcl.Range         `hcl:"after,attr_value_range"`
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
	Bake         *rawBake          `hcl:"bake,block"`
	Liveness     *rawLiveness      `hcl:"liveness,block"`
	Limits       *rawLimits        `hcl:"limits,block"`
}

type rawLiveness struct {
	DefRange      hcl.Range `hcl:",def_range"`
	HTTP          *string   `hcl:"http,optional"`
	HTTPRange     hcl.Range `hcl:"http,attr_value_range"`
	Listener      *string   `hcl:"listener,optional"`
	ListenerRange hcl.Range `hcl:"listener,attr_value_range"`
	Interval      *string   `hcl:"interval,optional"`
	IntervalRange hcl.Range `hcl:"interval,attr_value_range"`
	Failures      *int      `hcl:"failures,optional"`
	FailuresRange hcl.Range `hcl:"failures,attr_value_range"`
	Watchdog      *string   `hcl:"watchdog,optional"`
	WatchdogRange hcl.Range `hcl:"watchdog,attr_value_range"`
}

type rawLimits struct {
	Memory        *string   `hcl:"memory,optional"`
	MemoryRange   hcl.Range `hcl:"memory,attr_value_range"`
	Interval      *string   `hcl:"interval,optional"`
	IntervalRange hcl.Range `hcl:"interval,attr_value_range"`
}

type rawBake struct {
	Duration       *string   `hcl:"duration,optional"`
	DurationRange  hcl.Range `hcl:"duration,attr_value_range"`
	Interval       *string   `hcl:"interval,optional"`
	IntervalRange  hcl.Range `hcl:"interval,attr_value_range"`
	HTTP           *string   `hcl:"http,optional"`
	HTTPRange      hcl.Range `hcl:"http,attr_value_range"`
	Listener       *string   `hcl:"listener,optional"`
	ListenerRange  hcl.Range `hcl:"listener,attr_value_range"`
	MaxErrors      *string   `hcl:"max_errors,optional"`
	MaxErrorsRange hcl.Range `hcl:"max_errors,attr_value_range"`
	MaxP99         *string   `hcl:"max_p99,optional"`
	MaxP99Range    hcl.Range `hcl:"max_p99,attr_value_range"`
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
	MoveIdle     *bool     `hcl:"move_idle,optional"`
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
