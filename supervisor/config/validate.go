package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/joho/godotenv"
)

// validator turns the raw schema into a File, one method per block. Each
// starts from the block's defaults (defaults.go) and sets only what the
// file says, collecting a diagnostic for everything wrong.
type validator struct {
	dir   string
	diags hcl.Diagnostics
}

func (v *validator) errorf(rng hcl.Range, summary, format string, args ...any) {
	v.diag(hcl.DiagError, rng, summary, format, args...)
}

func (v *validator) warnf(rng hcl.Range, summary, format string, args ...any) {
	v.diag(hcl.DiagWarning, rng, summary, format, args...)
}

func (v *validator) diag(sev hcl.DiagnosticSeverity, rng hcl.Range, summary, format string, args ...any) {
	r := rng
	v.diags = append(v.diags, &hcl.Diagnostic{Severity: sev, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r})
}

func (v *validator) file(raw *rawFile, filename string, body *hclsyntax.Body) *File {
	f := defaultFile(v.dir)
	f.Path = filename
	if raw.Watch != nil {
		v.watch(raw.Watch, &f.Watch)
	}
	if raw.Control != nil {
		v.control(raw.Control, &f.Control)
	}
	if len(f.Control.Socket) > 107 {
		r := body.SrcRange
		if raw.Control != nil && raw.Control.Socket != nil {
			r = raw.Control.SocketRange
		}
		v.errorf(r, "Control socket path too long", "%s is %d bytes; unix socket paths are limited to 107. Set control { socket = \"/run/baton.sock\" } or a shorter path.", f.Control.Socket, len(f.Control.Socket))
	}
	if raw.Metrics != nil {
		v.metrics(raw.Metrics, &f.Metrics)
	}
	if raw.Health != nil {
		v.health(raw.Health, f)
	}
	v.duration(raw.ShutdownDelay, raw.ShutdownDelayRange, true, &f.ShutdownDelay)
	if raw.Log != nil {
		v.log(raw.Log, &f.Log)
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
			k := l.Key(p.Name)
			if other, dup := addrs[k]; dup {
				v.errorf(rp.Listeners[j].AddressRange, "Address used twice", "%s is already the address of %s; each listener needs its own address.", l.Address, other)
			}
			addrs[k] = fmt.Sprintf("listener %q of program %q", l.Name, p.Name)
		}
		f.Programs = append(f.Programs, p)
	}
	v.order(raw, f)
	return f
}

// order checks every after list: known programs, and no cycle.
func (v *validator) order(raw *rawFile, f *File) {
	rng := map[string]hcl.Range{}
	for _, rp := range raw.Programs {
		rng[rp.Name] = rp.AfterRange
	}
	for _, p := range f.Programs {
		for _, a := range p.After {
			switch {
			case a == p.Name:
				v.errorf(rng[p.Name], "Program after itself", "Program %q cannot start after itself.", p.Name)
			case f.Program(a) == nil:
				v.errorf(rng[p.Name], "Unknown program", "Program %q starts after %q, which the file does not declare.", p.Name, a)
			}
		}
	}
	// A depth-first walk finds the cycles; each is reported once, at the
	// program where it closes.
	const (
		unseen = iota
		walking
		done
	)
	state := map[string]int{}
	var path []string
	var walk func(name string)
	walk = func(name string) {
		state[name] = walking
		path = append(path, name)
		if p := f.Program(name); p != nil {
			for _, a := range p.After {
				switch state[a] {
				case walking:
					if a == name {
						continue // reported above
					}
					i := slices.Index(path, a)
					cycle := append(append([]string(nil), path[i:]...), a)
					v.errorf(rng[name], "Start order cycle", "The after lists make a cycle: %s. Remove one of them.", strings.Join(cycle, " → "))
				case unseen:
					if f.Program(a) != nil {
						walk(a)
					}
				}
			}
		}
		path = path[:len(path)-1]
		state[name] = done
	}
	for _, p := range f.Programs {
		if state[p.Name] == unseen {
			walk(p.Name)
		}
	}
}

func (v *validator) watch(w *rawWatch, out *WatchConfig) {
	setBool(&out.Enabled, w.Enabled)
	setBool(&out.Config, w.Config)
	v.duration(w.Debounce, w.DebounceRange, true, &out.Debounce)
	v.duration(w.Poll, w.PollRange, true, &out.Poll)
	if out.Poll > 0 && out.Poll < 10*time.Millisecond {
		v.errorf(w.PollRange, "Poll interval too short", "poll %v would keep a core busy; use at least 10ms (1s is usual).", out.Poll)
	}
}

func (v *validator) control(c *rawControl, out *ControlConfig) {
	setBool(&out.Enabled, c.Enabled)
	if c.Socket != nil {
		out.Socket = v.path(*c.Socket)
		if *c.Socket == "" {
			v.errorf(c.SocketRange, "Empty socket path", "socket is the path of the control socket; use enabled = false to have none.")
		}
	}
}

func (v *validator) metrics(m *rawMetrics, out *MetricsConfig) {
	addr, err := v.address(m.Address)
	if err != nil || strings.HasPrefix(addr, "unix:") {
		v.errorf(m.AddressRange, "Invalid metrics address", "%q: metrics are served on a TCP address such as \"127.0.0.1:9090\".", m.Address)
	}
	out.Address = addr
}

func (v *validator) health(h *rawHealth, f *File) {
	addr, err := v.address(h.Address)
	switch {
	case err != nil || strings.HasPrefix(addr, "unix:"):
		v.errorf(h.AddressRange, "Invalid health address", "%q: /livez and /readyz are served on a TCP address such as \"127.0.0.1:9100\".", h.Address)
	case addr == f.Metrics.Address:
		v.errorf(h.AddressRange, "Address used twice", "%s is the metrics address; leave the health block out to serve /livez and /readyz there.", addr)
	}
	f.Health.Address = addr
}

func (v *validator) log(l *rawLog, out *LogConfig) {
	out.File = v.logFile(l.logFile())
	if l.Level != nil {
		switch lv := strings.ToLower(*l.Level); lv {
		case "trace", "debug", "info", "warn", "error":
			out.Level, out.LevelSet = lv, true
		default:
			v.errorf(l.LevelRange, "Invalid log level", "%q is not a log level; use trace, debug, info, warn or error.", *l.Level)
		}
	}
	if l.Format != nil {
		switch *l.Format {
		case "text", "json":
			out.Format = *l.Format
		default:
			v.errorf(l.FormatRange, "Invalid log format", "%q is not a log format; use \"text\" or \"json\".", *l.Format)
		}
	}
}

func (v *validator) program(rp *rawProgram) *Program {
	p := defaultProgram(rp.Name, v.dir)
	if !validProgramName(rp.Name) {
		v.errorf(rp.NameRange, "Invalid program name", "%q: a program name is 1 to 64 letters, digits, '-', '_' or '.'.", rp.Name)
	}
	if len(rp.Command) == 0 || rp.Command[0] == "" {
		v.errorf(rp.CommandRange, "Empty command", `command is the program's argv, for example ["./bin/web", "-flag"].`)
	} else {
		p.Command = append([]string(nil), rp.Command...)
		if strings.Contains(p.Command[0], "/") {
			p.Command[0] = v.path(p.Command[0])
			// A build block makes it; otherwise it must be there by the
			// time the program starts.
			if st, err := os.Stat(p.Command[0]); rp.Build == nil && (err != nil || st.IsDir() || st.Mode()&0o111 == 0) {
				v.warnf(rp.CommandRange, "Command not found", "%s is not an executable file (yet); the program cannot start until it is.", p.Command[0])
			}
		}
	}
	if rp.Dir != nil {
		p.Dir = v.path(*rp.Dir)
		if st, err := os.Stat(p.Dir); err != nil || !st.IsDir() {
			v.warnf(rp.DirRange, "Directory not found", "%s is not a directory (yet); the program cannot start until it is.", p.Dir)
		}
	}
	p.EnvFiles, p.Env = v.envFiles(rp.EnvFile, rp.EnvFileRange, v.env(rp.Env, rp.EnvRange, true))
	setBool(&p.CleanEnv, rp.CleanEnv)
	p.After = slices.Clone(rp.After) // the decoded file is kept for the next read (decode)
	if rp.Type != nil {
		switch *rp.Type {
		case TypeService, TypeOneshot:
			p.Type = *rp.Type
		default:
			v.errorf(rp.TypeRange, "Invalid type", "%q: a program's type is \"service\" (the default) or \"oneshot\".", *rp.Type)
		}
	}
	if p.Type == TypeOneshot {
		// A one-shot runs to completion once: it is not restarted unless
		// its restart block says so.
		p.Restart.Policy = RestartNever
		for _, b := range []struct {
			set  bool
			name string
		}{{rp.Bake != nil, "bake"}, {rp.Liveness != nil, "liveness"}, {rp.Ready != nil, "ready"}} {
			if b.set {
				v.errorf(rp.TypeRange, "Not for a one-shot", "A one-shot program has no %s block: it is done when it exits with status 0.", b.name)
			}
		}
	}
	v.user(rp, p)
	if rp.Log != nil {
		p.Log = v.logFile(rp.Log)
	}
	v.listeners(rp, p)
	if rp.Ready != nil {
		v.ready(rp.Ready, p)
	}
	if rp.Stop != nil {
		v.stop(rp.Stop, &p.Stop)
	}
	if rp.Restart != nil {
		v.restart(rp.Restart, &p.Restart)
	}
	if rp.Watch != nil {
		v.programWatch(rp.Watch, &p.Watch)
	}
	if rp.Build != nil {
		p.Build = v.build(rp.Build)
	}
	if rp.Bake != nil {
		p.Bake = v.bake(rp.Bake, p)
	}
	if rp.Liveness != nil {
		p.Liveness = v.liveness(rp.Liveness, p)
	}
	if rp.Limits != nil {
		v.limits(rp.Limits, &p.Limits)
	}
	return p
}

// env validates an env map into sorted KEY=VALUE pairs; program
// environments may not set the variables baton sets for each generation.
func (v *validator) env(m map[string]string, rng hcl.Range, program bool) []string {
	var out []string
	for k, val := range m {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.errorf(rng, "Invalid environment variable", "%q cannot be the name of an environment variable.", k)
			continue
		}
		if program && ReservedEnv(k) {
			v.errorf(rng, "Reserved environment variable", "%s is set by baton for each generation and cannot be set in env.", k)
			continue
		}
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return out
}

// envFiles reads the env files (dotenv syntax) in order and returns
// their paths and the program's environment: each file's variables, a
// later file's overriding an earlier one's, then env's over all. The
// values may be secrets: no message shows a file's content.
func (v *validator) envFiles(files []string, rng hcl.Range, env []string) ([]string, []string) {
	if len(files) == 0 {
		return nil, env
	}
	merged := map[string]string{}
	var paths []string
	for _, f := range files {
		path := v.path(f)
		paths = append(paths, path)
		src, err := os.ReadFile(path)
		if err != nil {
			v.errorf(rng, "Cannot read an env file", "%v.", err)
			continue
		}
		vars, err := godotenv.UnmarshalBytes(src)
		if err != nil {
			v.errorf(rng, "Invalid env file", "%s: line %d is not KEY=VALUE in dotenv syntax (its content is not shown: it may hold a secret).", path, badDotenvLine(src))
			continue
		}
		for k, val := range vars {
			if ReservedEnv(k) {
				v.errorf(rng, "Reserved environment variable", "%s sets %s, which baton sets for each generation.", path, k)
				continue
			}
			merged[k] = val
		}
	}
	for _, kv := range env {
		k, val, _ := strings.Cut(kv, "=")
		merged[k] = val
	}
	out := make([]string, 0, len(merged))
	for k, val := range merged {
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return paths, out
}

// badDotenvLine returns the first line at which src stops parsing as a
// dotenv file: the shortest prefix of whole lines that fails.
func badDotenvLine(src []byte) int {
	lines := strings.SplitAfter(string(src), "\n")
	for n := 1; n <= len(lines); n++ {
		if _, err := godotenv.UnmarshalBytes([]byte(strings.Join(lines[:n], ""))); err != nil {
			return n
		}
	}
	return len(lines)
}

func (v *validator) user(rp *rawProgram, p *Program) {
	if rp.User != nil {
		p.User = *rp.User
		if u, err := LookupUser(p.User); err != nil {
			v.errorf(rp.UserRange, "Unknown user", "%v.", err)
		} else if os.Geteuid() != 0 && u.Uid != strconv.Itoa(os.Geteuid()) {
			v.errorf(rp.UserRange, "User needs root", "Running program %q as %q needs baton to run as root; it runs as uid %d.", rp.Name, p.User, os.Geteuid())
		}
	}
	if rp.Group != nil {
		p.Group = *rp.Group
		if _, err := LookupGroup(p.Group); err != nil {
			v.errorf(rp.GroupRange, "Unknown group", "%v.", err)
		}
		if rp.User == nil {
			v.errorf(rp.GroupRange, "Group without user", "group applies with user; set user too.")
		}
	}
}

func (v *validator) listeners(rp *rawProgram, p *Program) {
	if len(rp.Listeners) == 0 && p.Type != TypeOneshot {
		v.errorf(rp.DefRange, "No listener", `Program %q needs at least one listener block, for example listener "http" { address = "127.0.0.1:8080" }, unless it is a one-shot (type = "oneshot").`, rp.Name)
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
}

func (v *validator) ready(r *rawReady, p *Program) {
	out := &p.Ready
	v.duration(r.Timeout, r.TimeoutRange, false, &out.Timeout)
	if r.HTTP != nil && r.Delay != nil {
		v.errorf(r.DelayRange, "Conflicting readiness", "Use either http or delay in a ready block, not both.")
	}
	out.Path, out.Listener = v.probe(r.HTTP, r.HTTPRange, r.Listener, r.ListenerRange, p, "an http readiness check")
	if r.HTTP != nil {
		out.Mode = ReadyHTTP
		for _, l := range p.Listeners {
			if l.Name == out.Listener && strings.HasPrefix(l.Address, "unix:") {
				v.warnf(r.HTTPRange, "HTTP readiness on a unix socket", "During a handover baton cannot tell which generation answered on %s: the old one may answer for a new one that is not ready. Prefer notify readiness, or check a TCP listener.", l.Address)
			}
		}
	}
	if r.Delay != nil {
		out.Mode = ReadyDelay
		v.duration(r.Delay, r.DelayRange, true, &out.Delay)
		if out.Delay >= out.Timeout {
			v.errorf(r.DelayRange, "Delay beyond the ready timeout", "delay %v must be shorter than the ready timeout %v.", out.Delay, out.Timeout)
		}
	}
}

func (p *Program) hasListener(name string) bool {
	for _, l := range p.Listeners {
		if l.Name == name {
			return true
		}
	}
	return false
}

func (v *validator) stop(s *rawStop, out *StopConfig) {
	if s.Signal != nil {
		sig, ok := signalByName(*s.Signal)
		if !ok {
			v.errorf(s.SignalRange, "Unknown signal", "%q is not a signal name; use one such as \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\".", *s.Signal)
		} else {
			out.Signal = sig
		}
	}
	v.duration(s.Timeout, s.TimeoutRange, false, &out.Timeout)
	setBool(&out.MoveIdle, s.MoveIdle)
}

func (v *validator) restart(r *rawRestart, out *RestartConfig) {
	if r.Policy != nil {
		switch *r.Policy {
		case RestartAlways, RestartOnFailure, RestartNever:
			out.Policy = *r.Policy
		default:
			v.errorf(r.PolicyRange, "Invalid restart policy", "%q: use \"always\", \"on-failure\" or \"never\".", *r.Policy)
		}
	}
	v.duration(r.Backoff, r.BackoffRange, false, &out.Backoff)
	v.duration(r.MaxBackoff, r.MaxBackoffRange, false, &out.MaxBackoff)
	v.duration(r.ResetAfter, r.ResetAfterRange, false, &out.ResetAfter)
	if out.MaxBackoff < out.Backoff {
		v.errorf(r.MaxBackoffRange, "max_backoff below backoff", "max_backoff %v is shorter than backoff %v.", out.MaxBackoff, out.Backoff)
	}
}

// probe validates the http and listener attributes of a block that probes
// the program over HTTP (ready, bake, liveness), what naming the probe in
// messages: the path, and the listener, the program's first by default.
func (v *validator) probe(http *string, httpRange hcl.Range, listener *string, listenerRange hcl.Range, p *Program, what string) (path, name string) {
	if http != nil {
		path = *http
		if !strings.HasPrefix(path, "/") {
			v.errorf(httpRange, "Invalid health path", "%q: http is a request path such as \"/healthz\".", *http)
		}
		if len(p.Listeners) > 0 {
			name = p.Listeners[0].Name
		}
	}
	if listener != nil {
		name = *listener
		switch {
		case http == nil:
			v.errorf(listenerRange, "Listener without http", "listener only applies to %s.", what)
		case !p.hasListener(*listener):
			v.errorf(listenerRange, "Unknown listener", "Program %q has no listener named %q.", p.Name, *listener)
		}
	}
	return path, name
}

func (v *validator) bake(r *rawBake, p *Program) *BakeConfig {
	b := defaultBake()
	v.duration(r.Duration, r.DurationRange, false, &b.Duration)
	v.duration(r.Interval, r.IntervalRange, false, &b.Interval)
	if b.Interval > b.Duration {
		v.errorf(r.IntervalRange, "Interval beyond the bake", "interval %v is longer than the bake's duration %v.", b.Interval, b.Duration)
	}
	b.Path, b.Listener = v.probe(r.HTTP, r.HTTPRange, r.Listener, r.ListenerRange, p, "the bake's http probe")
	if r.MaxErrors != nil {
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(*r.MaxErrors, "%")), 64)
		if err != nil || !strings.HasSuffix(*r.MaxErrors, "%") || f < 0 || f > 100 {
			v.errorf(r.MaxErrorsRange, "Invalid share", "%q: max_errors is a share of the requests, such as \"1%%\" or \"0.5%%\".", *r.MaxErrors)
		} else {
			b.MaxErrors = f / 100
		}
	}
	if r.MaxP99 != nil {
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(*r.MaxP99, "x")), 64)
		if err != nil || !strings.HasSuffix(*r.MaxP99, "x") || f < 1 {
			v.errorf(r.MaxP99Range, "Invalid factor", "%q: max_p99 is a factor of the old generation's p99 latency, at least 1, such as \"2x\".", *r.MaxP99)
		} else {
			b.MaxP99 = f
		}
	}
	return b
}

func (v *validator) liveness(r *rawLiveness, p *Program) *LivenessConfig {
	l := defaultLiveness()
	v.duration(r.Interval, r.IntervalRange, false, &l.Interval)
	v.duration(r.Watchdog, r.WatchdogRange, false, &l.Watchdog)
	if r.Failures != nil {
		if *r.Failures < 1 || *r.Failures > 100 {
			v.errorf(r.FailuresRange, "Invalid failures", "failures is how many probes in a row must fail, 1 to 100.")
		} else {
			l.Failures = *r.Failures
		}
	}
	l.Path, l.Listener = v.probe(r.HTTP, r.HTTPRange, r.Listener, r.ListenerRange, p, "the liveness http probe")
	if r.HTTP == nil && r.Watchdog == nil {
		v.errorf(r.DefRange, "Nothing to check", "A liveness block needs http (a probe) or watchdog (systemd's WATCHDOG=1 pings), or both.")
	}
	return l
}

func (v *validator) limits(r *rawLimits, out *LimitsConfig) {
	v.duration(r.Interval, r.IntervalRange, false, &out.Interval)
	if r.Memory != nil {
		n, err := parseSize(*r.Memory)
		if err != nil || n < 1<<20 {
			v.errorf(r.MemoryRange, "Invalid size", "%q: memory is a size of at least 1MB, such as \"512MB\" or \"2GB\".", *r.Memory)
		} else {
			out.Memory = n
		}
	}
}

func (v *validator) programWatch(w *rawProgramWatch, out *ProgramWatch) {
	setBool(&out.Enabled, w.Enabled)
	for _, path := range w.Paths {
		if path == "" {
			v.errorf(w.PathsRange, "Empty path", "paths lists files or directories to watch; an empty string is not one.")
			continue
		}
		out.Paths = append(out.Paths, v.path(path))
	}
}

func (v *validator) logFile(r *rawLogFile) LogFile {
	lf := defaultLogFile()
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

func (v *validator) build(b *rawBuild) *BuildConfig {
	bc := defaultBuild(v.dir)
	bc.Command = slices.Clone(b.Command)
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
	bc.Env = v.env(b.Env, b.EnvRange, false)
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
	v.duration(b.Debounce, b.DebounceRange, true, &bc.Debounce)
	return bc
}

// duration parses an optional duration attribute into out, which keeps
// its default when the attribute is left out; zero is allowed only where
// allowZero says so.
func (v *validator) duration(s *string, rng hcl.Range, allowZero bool, out *time.Duration) {
	if s == nil {
		return
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		v.errorf(rng, "Invalid duration", "%q is not a duration; write it like \"300ms\", \"10s\" or \"1m30s\".", *s)
		return
	}
	if d < 0 || (d == 0 && !allowZero) {
		v.errorf(rng, "Invalid duration", "%q must be greater than zero.", *s)
		return
	}
	*out = d
}

func setBool(out *bool, b *bool) {
	if b != nil {
		*out = *b
	}
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
