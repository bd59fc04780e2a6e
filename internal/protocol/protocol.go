// Package protocol holds the wire details shared by baton's supervisor and
// the child package: the environment of the systemd socket-activation and
// notify protocols, and the notify message format.
//
// Both sides follow sd_listen_fds(3) and sd_notify(3) so that programs in
// any language, and the real systemd tools, interoperate with baton.
package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Environment variables of the socket-activation and notify protocols, and
// baton's own identity variables.
const (
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDNames = "LISTEN_FDNAMES"
	EnvNotifySocket  = "NOTIFY_SOCKET"
	EnvProgram       = "BATON_PROGRAM"
	EnvGeneration    = "BATON_GENERATION"
	// EnvStopTimeout carries the program's stop timeout (a Go duration),
	// so that the child can fit its drain bounds in it.
	EnvStopTimeout = "BATON_STOP_TIMEOUT"
	// EnvWatchdogUsec is systemd's watchdog: send WATCHDOG=1 at least
	// every that many microseconds (sd_watchdog_enabled(3)).
	EnvWatchdogUsec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
	// EnvHandoffFD names the inherited descriptor of a generation's
	// handoff socket, over which idle connections move between
	// generations (package internal/handoff). It is not counted in
	// LISTEN_FDS.
	EnvHandoffFD = "BATON_HANDOFF_FD"
)

// FirstFD is the first inherited file descriptor (SD_LISTEN_FDS_START).
const FirstFD = 3

// MaxNotifySize bounds one notify datagram. systemd accepts up to
// NOTIFY_BUFFER_MAX (PIPE_BUF-sized) messages; anything longer is cut.
const MaxNotifySize = 4096

// Message is one parsed notify datagram: newline-separated KEY=VALUE
// assignments, as sd_notify(3) describes.
type Message struct {
	Ready     bool   // READY=1
	Reloading bool   // RELOADING=1
	Stopping  bool   // STOPPING=1
	Status    string // STATUS=…, "" when absent
	HasStatus bool   // STATUS= was present (it may be empty)
	MainPID   int    // MAINPID=…, 0 when absent
	Errno     int    // ERRNO=…, 0 when absent
	// ExtendTimeoutUsec is EXTEND_TIMEOUT_USEC=…, in microseconds, 0 when absent.
	ExtendTimeoutUsec uint64
	Barrier           bool // BARRIER=1
	Watchdog          bool // WATCHDOG=1
	// Stats are the request counters of X_BATON_STATS=…, nil when absent.
	Stats *Stats
}

// ErrEmptyMessage is returned by ParseMessage for a datagram without any
// assignment.
var ErrEmptyMessage = errors.New("protocol: empty notify message")

// ParseMessage parses a notify datagram. Unknown keys are ignored, as systemd
// does; a line without "=" or a malformed number is an error that names it.
func ParseMessage(b []byte) (Message, error) {
	var m Message
	seen := false
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		if len(line) == 0 {
			continue
		}
		key, val, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			return m, fmt.Errorf("protocol: notify line %q has no '='", truncate(line))
		}
		seen = true
		switch string(key) {
		case "READY":
			m.Ready = string(val) == "1"
		case "RELOADING":
			m.Reloading = string(val) == "1"
		case "STOPPING":
			m.Stopping = string(val) == "1"
		case "BARRIER":
			m.Barrier = string(val) == "1"
		case "WATCHDOG":
			m.Watchdog = string(val) == "1"
		case "STATUS":
			m.Status, m.HasStatus = string(val), true
		case "MAINPID":
			n, err := strconv.Atoi(string(val))
			if err != nil || n <= 0 {
				return m, fmt.Errorf("protocol: bad MAINPID %q", truncate(val))
			}
			m.MainPID = n
		case "ERRNO":
			n, err := strconv.Atoi(string(val))
			if err != nil || n < 0 {
				return m, fmt.Errorf("protocol: bad ERRNO %q", truncate(val))
			}
			m.Errno = n
		case StatsField:
			st, err := ParseStats(string(val))
			if err != nil {
				return m, err
			}
			m.Stats = &st
		case "EXTEND_TIMEOUT_USEC":
			n, err := strconv.ParseUint(string(val), 10, 64)
			if err != nil {
				return m, fmt.Errorf("protocol: bad EXTEND_TIMEOUT_USEC %q", truncate(val))
			}
			m.ExtendTimeoutUsec = n
		}
	}
	if !seen {
		return m, ErrEmptyMessage
	}
	return m, nil
}

func truncate(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// SplitNames splits LISTEN_FDNAMES into n names. Missing names are
// "unknown", as sd_listen_fds_with_names(3) reports them.
func SplitNames(v string, n int) []string {
	names := make([]string, n)
	var parts []string
	if v != "" {
		parts = strings.Split(v, ":")
	}
	for i := range names {
		if i < len(parts) && parts[i] != "" {
			names[i] = parts[i]
		} else {
			names[i] = "unknown"
		}
	}
	return names
}

// ValidName reports whether s can be a socket name in LISTEN_FDNAMES:
// systemd allows at most 255 printable ASCII characters without ':'.
func ValidName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}
