package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse_defaults(t *testing.T) {
	f, diags := Parse([]byte(`
program "web" {
  command = ["./bin/web", "-v"]
  listener "http" { address = "localhost:8080" }
}
`), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := f.Programs[0]
	for _, c := range []struct {
		what       string
		have, want any
	}{
		{"command", strings.Join(p.Command, " "), "/srv/bin/web -v"},
		{"dir", p.Dir, "/srv"},
		{"address", p.Listeners[0].Address, "127.0.0.1:8080"},
		{"ready mode", p.Ready.Mode, ReadyNotify},
		{"ready timeout", p.Ready.Timeout, DefaultReadyTimeout},
		{"stop signal", p.Stop.Signal, syscall.SIGTERM},
		{"stop timeout", p.Stop.Timeout, 30 * time.Second},
		{"stop move_idle", p.Stop.MoveIdle, true},
		{"restart", p.Restart.Policy, RestartAlways},
		{"log level", f.Log.Level, "info"},
		{"log format", f.Log.Format, "text"},
	} {
		if c.have != c.want {
			t.Errorf("%s: want %v, have %v", c.what, c.want, c.have)
		}
	}
}

func TestParse_everything(t *testing.T) {
	f, diags := Parse([]byte(`
log {
  level  = "debug"
  format = "json"
}
program "web" {
  command = ["web"]
  dir     = "app"
  env     = { B = "2", A = "1" }
  listener "http" { address = "unix:run/web.sock" }
  listener "admin" { address = "[::1]:9000" }
  ready {
    http     = "/healthz"
    listener = "admin"
    timeout  = "5s"
  }
  stop {
    signal    = "INT"
    timeout   = "1m"
    move_idle = false
  }
  restart {
    policy      = "on-failure"
    backoff     = "100ms"
    max_backoff = "5s"
    reset_after = "10s"
  }
}
`), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := f.Programs[0]
	if p.Command[0] != "web" || p.Dir != "/srv/app" || strings.Join(p.Env, ",") != "A=1,B=2" ||
		p.Listeners[0].Address != "unix:/srv/run/web.sock" || p.Listeners[1].Address != "[::1]:9000" ||
		p.Ready.Mode != ReadyHTTP || p.Ready.Listener != "admin" || p.Ready.Timeout != 5*time.Second ||
		p.Stop.Signal != syscall.SIGINT || p.Stop.Timeout != time.Minute || p.Stop.MoveIdle ||
		p.Restart != (RestartConfig{RestartOnFailure, 100 * time.Millisecond, 5 * time.Second, 10 * time.Second}) ||
		f.Log != (LogConfig{Level: "debug", Format: "json", LevelSet: true, File: LogFile{MaxSize: DefaultLogMaxSize, MaxFiles: DefaultLogMaxFiles}}) {
		t.Fatalf("have %+v, %+v", f.Log, *p)
	}
}

// Env files are read in order, a later one overriding an earlier one,
// and env overrides them all; a missing or malformed file is an error
// with the attribute's position that never shows a file's content.
func TestParse_envFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".env"), []byte("A=from-env\nB=from-env\n# a comment\nexport C=\"quoted value\"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secrets.env"), []byte("B=from-secrets\nTOKEN=s3cr3t\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "broken.env"), []byte("GOOD=1\nBAD KEY s3cr3t-value\n"), 0o600)
	src := func(files, env string) []byte {
		return []byte(`program "web" {
  command  = ["./web"]
  env_file = [` + files + `]
  env      = { ` + env + ` }
  listener "http" { address = "127.0.0.1:8080" }
}`)
	}
	f, diags := Parse(src(`".env", "secrets.env"`, `A = "from-config"`), "config.hcl", dir)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := f.Programs[0]
	if have, want := strings.Join(p.Env, ","), "A=from-config,B=from-secrets,C=quoted value,TOKEN=s3cr3t"; have != want {
		t.Fatalf("env: want %q, have %q", want, have)
	}
	if len(p.EnvFiles) != 2 || p.EnvFiles[1] != filepath.Join(dir, "secrets.env") {
		t.Fatalf("env files: %v", p.EnvFiles)
	}
	for _, tc := range []struct{ files, want string }{
		{`"missing.env"`, "config.hcl:3,14-29: Cannot read an env file"},
		{`".env", "broken.env"`, "broken.env: line 2 is not KEY=VALUE"},
	} {
		_, diags := Parse(src(tc.files, ""), "config.hcl", dir)
		var all []string
		for _, d := range diags {
			all = append(all, FormatDiagnostic(d))
		}
		joined := strings.Join(all, "\n")
		if !diags.HasErrors() || !strings.Contains(joined, tc.want) || strings.Contains(joined, "s3cr3t") {
			t.Fatalf("%s: want %q and no secret, have %s", tc.files, tc.want, joined)
		}
	}
}

// A one-shot needs no listener and is not restarted by default; after
// lists the programs a program starts after.
func TestParse_oneshotAndAfter(t *testing.T) {
	f, diags := Parse([]byte(`
program "migrate" {
  command = ["./orders", "migrate"]
  type    = "oneshot"
}
program "web" {
  command = ["./orders"]
  after   = ["migrate"]
  listener "http" { address = "127.0.0.1:8080" }
}
`), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m, w := f.Programs[0], f.Programs[1]
	if m.Type != TypeOneshot || len(m.Listeners) != 0 || m.Restart.Policy != RestartNever || w.Type != TypeService || len(w.After) != 1 || w.After[0] != "migrate" {
		t.Fatalf("have %+v and %+v", m, w)
	}
}

func TestParse_bake(t *testing.T) {
	f, diags := Parse([]byte(`
program "web" {
  command = ["./web"]
  listener "http" { address = "127.0.0.1:8080" }
  listener "admin" { address = "127.0.0.1:8081" }
  bake {
    duration   = "1m"
    http       = "/healthz"
    listener   = "admin"
    interval   = "2s"
    max_errors = "0.5%"
    max_p99    = "1.5x"
  }
}
program "defaults" {
  command = ["./web"]
  listener "http" { address = "127.0.0.1:8082" }
  bake {}
}
`), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := BakeConfig{Duration: time.Minute, Interval: 2 * time.Second, Path: "/healthz", Listener: "admin", MaxErrors: 0.005, MaxP99: 1.5}
	if b := f.Programs[0].Bake; b == nil || *b != want {
		t.Fatalf("want %+v, have %+v", want, b)
	}
	if b := f.Programs[1].Bake; *b != (BakeConfig{Duration: DefaultBakeDuration, Interval: DefaultBakeInterval, MaxErrors: DefaultBakeMaxErrors}) {
		t.Fatalf("defaults: %+v", b)
	}
}

// Every invalid value is a diagnostic with its position.
func TestParse_errorsHavePositions(t *testing.T) {
	const prog = "program \"web\" {\n  command = [\"./web\"]\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n"
	for _, tc := range []struct {
		name string
		src  string
		want string // position and message
	}{
		{"syntax", "program \"web\" {\n  command = [\n", "config.hcl:3,1-1: Missing expression"},
		{"unknown attribute", prog + "  comand = [\"x\"]\n}\n", `config.hcl:4,3-9: Unsupported argument; An argument named "comand" is not expected here`},
		{"unknown block", prog + "  readiness { }\n}\n", `config.hcl:4,3-12: Unsupported block type`},
		{"no program", "log { level = \"info\" }\n", "No program"},
		{"no command", "program \"web\" {\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n}\n", `config.hcl:1,15-15: Missing required argument; The argument "command" is required`},
		{"empty command", "program \"web\" {\n  command = []\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n}\n", "config.hcl:2,13-15: Empty command"},
		{"no listener", "program \"web\" {\n  command = [\"./web\"]\n}\n", "config.hcl:1,1-14: No listener"},
		{"bad address", "program \"web\" {\n  command = [\"./web\"]\n  listener \"http\" { address = \"8080\" }\n}\n", `config.hcl:3,31-37: Invalid listener address; "8080" is not an address`},
		{"host name", "program \"web\" {\n  command = [\"./web\"]\n  listener \"http\" { address = \"example.com:80\" }\n}\n", "the host must be an IP address"},
		{"bad duration", prog + "  ready { timeout = \"10\" }\n}\n", `config.hcl:4,21-25: Invalid duration; "10" is not a duration`},
		{"zero duration", prog + "  stop { timeout = \"0s\" }\n}\n", `config.hcl:4,20-24: Invalid duration; "0s" must be greater than zero`},
		{"bad signal", prog + "  stop { signal = \"SIGFOO\" }\n}\n", `config.hcl:4,19-27: Unknown signal`},
		{"bad policy", prog + "  restart { policy = \"sometimes\" }\n}\n", `config.hcl:4,22-33: Invalid restart policy`},
		{"http and delay", prog + "  ready {\n    http = \"/h\"\n    delay = \"1s\"\n  }\n}\n", "config.hcl:6,13-17: Conflicting readiness"},
		{"bad path", prog + "  ready { http = \"healthz\" }\n}\n", `config.hcl:4,18-27: Invalid health path`},
		{"unknown ready listener", prog + "  ready {\n    http = \"/h\"\n    listener = \"admin\"\n  }\n}\n", `config.hcl:6,16-23: Unknown listener`},
		{"reserved env", "program \"web\" {\n  command = [\"./web\"]\n  env = { LISTEN_FDS = \"2\" }\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n}\n", "config.hcl:3,9-29: Reserved environment variable"},
		{"duplicate program", prog + "}\n" + prog + "}\n", `config.hcl:5,9-14: Duplicate program; A program named "web" is already declared at config.hcl:1,9-14`},
		{"duplicate listener", prog + "  listener \"http\" { address = \"127.0.0.1:8081\" }\n}\n", "config.hcl:4,12-18: Duplicate listener"},
		{"address twice", prog + "  listener \"admin\" { address = \"127.0.0.1:8080\" }\n}\n", "config.hcl:4,32-48: Address used twice"},
		{"bad log level", "log { level = \"loud\" }\n" + prog + "}\n", `config.hcl:1,15-21: Invalid log level`},
		{"bad program name", "program \"a b\" {\n  command = [\"./web\"]\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n}\n", "config.hcl:1,9-14: Invalid program name"},
		{"max below backoff", prog + "  restart {\n    backoff = \"10s\"\n    max_backoff = \"1s\"\n  }\n}\n", "config.hcl:6,19-23: max_backoff below backoff"},
		{"wrong type", prog + "  stop { timeout = 30 }\n}\n", ""},
		{"bad type", prog + "  type = \"daemon\"\n}\n", "config.hcl:4,10-18: Invalid type"},
		{"unknown after", prog + "  after = [\"migrate\"]\n}\n", `config.hcl:4,11-22: Unknown program; Program "web" starts after "migrate"`},
		{"after itself", prog + "  after = [\"web\"]\n}\n", "config.hcl:4,11-18: Program after itself"},
		{"cycle", prog + "  after = [\"b\"]\n}\nprogram \"b\" {\n  command = [\"./b\"]\n  type = \"oneshot\"\n  after = [\"web\"]\n}\n", "Start order cycle; The after lists make a cycle: web → b → web"},
		{"oneshot ready", "program \"m\" {\n  command = [\"./m\"]\n  type = \"oneshot\"\n  ready { timeout = \"1s\" }\n}\n", "config.hcl:3,10-19: Not for a one-shot"},
		{"bake share", prog + "  bake { max_errors = \"1\" }\n}\n", "config.hcl:4,23-26: Invalid share"},
		{"bake factor", prog + "  bake { max_p99 = \"0.5x\" }\n}\n", "config.hcl:4,20-26: Invalid factor"},
		{"bake interval", prog + "  bake {\n    duration = \"1s\"\n    interval = \"2s\"\n  }\n}\n", "config.hcl:6,16-20: Interval beyond the bake"},
		{"bake listener", prog + "  bake {\n    http = \"/h\"\n    listener = \"x\"\n  }\n}\n", "Unknown listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Parse([]byte(tc.src), "config.hcl", "/srv")
			if !diags.HasErrors() {
				t.Fatal("want an error, have none")
			}
			var all []string
			for _, d := range diags {
				all = append(all, FormatDiagnostic(d))
			}
			joined := strings.Join(all, "\n")
			if tc.want != "" && !strings.Contains(joined, tc.want) {
				t.Fatalf("want %q in\n%s", tc.want, joined)
			}
			for _, d := range diags {
				if d.Subject == nil && !strings.Contains(joined, "No program") {
					t.Errorf("diagnostic without a position: %s", FormatDiagnostic(d))
				}
			}
		})
	}
}

// A command given as a path that is not an executable file is a warning
// with its position, as a missing directory is: the program cannot start
// until it is there. A build block makes it, so it may be missing then.
func TestParse_commandNotFoundWarns(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "web")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	for _, tc := range []struct {
		name, command, extra, want string
	}{
		{"missing", "./nope", "", "config.hcl:2,13-23: Command not found; " + filepath.Join(dir, "nope") + " is not an executable file (yet)"},
		{"not executable", "./data", "", "Command not found"},
		{"there", "./web", "", ""},
		{"built", "./nope", "  build { command = [\"go\", \"build\", \"-o\", \"{output}\", \".\"] }\n", ""},
		{"from PATH", "web", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "program \"web\" {\n  command = [\"" + tc.command + "\"]\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n" + tc.extra + "}\n"
			_, diags := Parse([]byte(src), "config.hcl", dir)
			if diags.HasErrors() {
				t.Fatalf("want no error, have %v", diags)
			}
			var all []string
			for _, d := range diags {
				all = append(all, FormatDiagnostic(d))
			}
			joined := strings.Join(all, "\n")
			if tc.want == "" && strings.Contains(joined, "Command not found") || tc.want != "" && !strings.Contains(joined, tc.want) {
				t.Fatalf("want %q, have\n%s", tc.want, joined)
			}
		})
	}
}

// A source read again unchanged (every SIGHUP) is not parsed and decoded
// again, but validated again: what it names outside itself is looked at
// anew (here an env file and the directory paths resolve against), and
// changing one File changes neither the next nor the kept decode.
func TestParse_unchangedSourceIsValidatedAgain(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	env := filepath.Join(dir, ".env")
	os.WriteFile(env, []byte("A=1\n"), 0o600)
	src := []byte(`program "web" {
  command  = ["./web"]
  env_file = [".env"]
  after    = ["db"]
  listener "http" { address = "127.0.0.1:8080" }
  build { command = ["go", "build", "-o", "{output}", "."] }
}
program "db" {
  command  = ["/bin/true"]
  listener "http" { address = "127.0.0.1:8081" }
}`)
	parse := func(dir string) *Program {
		t.Helper()
		f, diags := Parse(src, "config.hcl", dir)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return f.Program("web")
	}
	first := parse(dir)
	first.After[0], first.Build.Command[0] = "changed", "changed"
	os.WriteFile(env, []byte("A=2\n"), 0o600)
	again := parse(dir)
	if strings.Join(again.Env, ",") != "A=2" || again.After[0] != "db" || again.Build.Command[0] != "go" {
		t.Fatalf("read again: env %v (want A=2), after %v, build %v", again.Env, again.After, again.Build.Command)
	}
	os.WriteFile(filepath.Join(other, ".env"), []byte("A=3\n"), 0o600)
	if p := parse(other); p.Command[0] != filepath.Join(other, "web") || strings.Join(p.Env, ",") != "A=3" {
		t.Fatalf("in another directory: command %v, env %v", p.Command, p.Env)
	}

	// What is not done again: the parse and the decode, most of the
	// allocations of a read.
	other2 := append(bytes.Clone(src), "\n# another source\n"...)
	changed := testing.AllocsPerRun(20, func() {
		Parse(src, "config.hcl", dir)
		Parse(other2, "config.hcl", dir)
	}) / 2
	same := testing.AllocsPerRun(20, func() { Parse(src, "config.hcl", dir) })
	if same > changed/2 {
		t.Fatalf("reading an unchanged source allocates %v times, a changed one %v: parsed again", same, changed)
	}
}
