// Package control is the wire format of baton's control socket and a
// client for it: what `baton status`, `reload`, `restart`, `stop`,
// `start` and `logs` send and receive. It holds no engine; the supervisor
// package serves this API.
//
// The API is JSON over HTTP on a unix socket, so that curl works too:
//
//	GET  /v1/status                        StatusReply
//	POST /v1/reload  ReloadRequest         ReloadReply      re-read the config, hand over
//	POST /v1/programs/{name}/restart       Result           hand over, same config
//	POST /v1/programs/{name}/stop          Result           stop; sockets stay open
//	POST /v1/programs/{name}/start         Result
//	POST /v1/programs/{name}/promote       Result           end a bake as passed
//	POST /v1/programs/{name}/revert        Result           end a bake as failed
//	POST /v1/programs/{name}/rollback      Result           hand over to the previous binary
//	GET  /v1/programs/{name}/logs?lines=N&follow=1          text, one line per line
//	     …&seq=1&after=S                   each line numbered ("S text"), from line S+1; END when baton stops
//	POST /v1/upgrade                       UpgradeReply     replace baton by the binary on disk, in place
//	GET  /v1/upgrade                       UpgradeStatus    baton's version and upgrades
//
// Failures answer 4xx or 5xx with an ErrorReply; a handover that failed
// answers 409 with the Result that says why.
package control

import "time"

// Program states, as ProgramStatus reports them.
const (
	StateBuilding     = "building"      // baton dev: waiting for the first good build
	StateWaiting      = "waiting"       // waiting for the programs of its after list (reason says which)
	StateStarting     = "starting"      // a generation starts and none serves
	StateRunning      = "running"       // a generation serves
	StateBaking       = "baking"        // a new generation serves beside the old one until its bake's verdict
	StateBackoff      = "backoff"       // down, waiting to restart
	StateExited       = "exited"        // down, not restarted by its policy
	StateStopping     = "stopping"      // stopped on request: its generations are stopping
	StateStopped      = "stopped"       // stopped on request, or baton stopped it
	StateShuttingDown = "shutting-down" // baton stops, or the program left the config
)

// StatusReply is the body of GET /v1/status: the contract of
// `baton status -json`.
type StatusReply struct {
	Programs []ProgramStatus `json:"programs"` // in config order
}

// ProgramStatus is what baton reports about one program.
type ProgramStatus struct {
	Name string `json:"name"` // the program block's label
	// State is one of the State… constants.
	State string `json:"state"`
	// Generation and PID are the serving generation's (0 when none
	// serves).
	Generation int        `json:"generation"`
	PID        int        `json:"pid"`
	StartedAt  *time.Time `json:"started_at"` // null when none serves
	// Restarts counts restarts after the serving generation exited on
	// its own; Handovers counts completed handovers.
	Restarts  int            `json:"restarts"`
	Handovers int            `json:"handovers"`
	Rollbacks int            `json:"rollbacks"`                      // new generations that failed while another served
	Reverts   int            `json:"reverts"`                        // new generations that failed their bake
	LastExit  *ExitRecord    `json:"last_exit"`                      // null until a generation exits
	Pending   int            `json:"pending_generation,omitempty"`   // starting, not ready yet
	Draining  []int          `json:"draining_generations,omitempty"` // old generations not exited yet
	Listeners []ListenerInfo `json:"listeners"`                      // as bound
	LastError string         `json:"last_error,omitempty"`           // the last failed start or handover
	// RestartIn is the wait left before the next restart, in backoff.
	RestartIn time.Duration `json:"restart_in_ns,omitempty"`
	// Why the program is down and not restarted (StateExited).
	Reason string `json:"reason,omitempty"`
	Status string `json:"status,omitempty"` // the serving generation's last STATUS=
	// Bake is the bake under way (verdict "baking"), or the last one;
	// null when the program never baked.
	Bake *BakeStatus `json:"bake,omitempty"`
	// Memory is the serving generation's resident memory, its whole
	// process group, at the last sample (limits.interval).
	Memory int64 `json:"memory_bytes,omitempty"`
	// LivenessFailures and MemoryReplacements count serving generations
	// replaced by a handover because they hung or grew past the limit;
	// LastLiveness is the last liveness result ("ok", or why not).
	LivenessFailures   int    `json:"liveness_failures,omitempty"`
	MemoryReplacements int    `json:"memory_replacements,omitempty"`
	LastLiveness       string `json:"last_liveness,omitempty"`
	// After lists the programs it starts after (its after list).
	After []string `json:"after,omitempty"`
}

// BakeStatus is a bake: a new generation judged while the old one serves.
type BakeStatus struct {
	Generation int    `json:"generation"` // the generation judged
	PID        int    `json:"pid"`
	Verdict    string `json:"verdict"`          // baking, passed, failed or abandoned
	Reason     string `json:"reason,omitempty"` // the figure that decided it
	// Duration is how long it has baked (or baked); EndsIn the time left.
	Duration time.Duration `json:"duration_ns"`
	EndsIn   time.Duration `json:"ends_in_ns,omitempty"`
	// What the new generation reported during the bake (a program that
	// reports no counters: zero).
	Requests uint64        `json:"requests,omitempty"`
	Errors   uint64        `json:"errors,omitempty"` // answered 5xx
	P99      time.Duration `json:"p99_ns,omitempty"` // upper bound of its p99 latency
}

// ListenerInfo is one of a program's sockets.
type ListenerInfo struct {
	Name    string `json:"name"`    // the listener block's label
	Address string `json:"address"` // as bound
}

// ExitRecord describes a generation's end.
type ExitRecord struct {
	Generation int           `json:"generation"`         // the generation that exited
	PID        int           `json:"pid"`                // its process (and group)
	Code       int           `json:"code"`               // exit status; -1 when a signal killed it
	Signal     string        `json:"signal,omitempty"`   // the signal that killed it
	At         time.Time     `json:"at"`                 // when it was reaped
	Uptime     time.Duration `json:"uptime_ns"`          // from start to exit
	Drain      time.Duration `json:"drain_ns,omitempty"` // from the stop signal to the exit
	Killed     string        `json:"killed,omitempty"`   // why baton sent SIGKILL
	Status     string        `json:"status,omitempty"`   // the last STATUS= it sent
}

// Result is the outcome of a handover, a start, a restart or a stop of
// one program.
type Result struct {
	Program    string        `json:"program"`               // the program's name
	Generation int           `json:"generation"`            // the generation serving afterwards, 0 if none
	ReadyIn    time.Duration `json:"ready_in_ns,omitempty"` // from its start to READY
	Unchanged  bool          `json:"unchanged,omitempty"`   // nothing to hand over
	Stopped    bool          `json:"stopped,omitempty"`     // the program is stopped; its new config applies when it starts
	Error      string        `json:"error,omitempty"`       // why it failed
	// Err is the error itself, for Go callers of the supervisor; it does
	// not travel.
	Err error `json:"-"`
}

// ReloadRequest is the body of POST /v1/reload; no programs means all.
type ReloadRequest struct {
	Programs []string `json:"programs"` // names
}

// ReloadReply is the answer to POST /v1/reload.
type ReloadReply struct {
	Results []Result `json:"results"`         // one per program handed over
	Error   string   `json:"error,omitempty"` // the rollbacks, joined
}

// ErrorReply is the body of a failed request.
type ErrorReply struct {
	Error string `json:"error"` // what went wrong, and what to do
}

// UpgradeReply is the answer to POST /v1/upgrade: the binary on disk
// passed its checks, every program is paused, and baton execs it as soon
// as the answer is out. The exec closes the connection; GET /v1/upgrade,
// answered by the new image, tells whether it worked.
type UpgradeReply struct {
	From     string `json:"from"`     // the running version
	To       string `json:"to"`       // the version of the binary on disk
	PID      int    `json:"pid"`      // baton's, which the exec keeps
	Upgrades int    `json:"upgrades"` // upgrades in place before this one
}

// UpgradeStatus is the body of GET /v1/upgrade.
type UpgradeStatus struct {
	Version   string `json:"version"`   // of the image that answers
	PID       int    `json:"pid"`       // baton's
	Upgrades  int    `json:"upgrades"`  // upgrades in place since baton started
	Upgrading bool   `json:"upgrading"` // one is under way
	// LastError says why the last upgrade failed; baton ran on as it was.
	LastError string `json:"last_error,omitempty"`
	// Previous is the version before the last upgrade, UpgradedAt when
	// it happened.
	Previous   string     `json:"previous,omitempty"`
	UpgradedAt *time.Time `json:"upgraded_at,omitempty"`
}
