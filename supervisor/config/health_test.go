package config

import (
	"strings"
	"testing"
	"time"
)

// shutdown_delay and the health block: defaults, values, and errors with
// their positions.
func TestParse_shutdownDelayAndHealth(t *testing.T) {
	const prog = "program \"web\" {\n  command = [\"./web\"]\n  listener \"http\" { address = \"127.0.0.1:8080\" }\n}\n"
	f, diags := Parse([]byte(prog), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.ShutdownDelay != 0 || f.Health.Address != "" {
		t.Fatalf("defaults: want 0 and no health address, have %v and %q", f.ShutdownDelay, f.Health.Address)
	}
	f, diags = Parse([]byte("shutdown_delay = \"1500ms\"\nhealth { address = \"localhost:9100\" }\n"+prog), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.ShutdownDelay != 1500*time.Millisecond || f.Health.Address != "127.0.0.1:9100" {
		t.Fatalf("want 1.5s and 127.0.0.1:9100, have %v and %q", f.ShutdownDelay, f.Health.Address)
	}
	for _, tc := range []struct{ src, want string }{
		{"shutdown_delay = \"soon\"\n", `config.hcl:1,18-24: Invalid duration`},
		{"shutdown_delay = \"-1s\"\n", `config.hcl:1,18-23: Invalid duration`},
		{"health { address = \"unix:/run/h.sock\" }\n", `config.hcl:1,20-38: Invalid health address`},
		{"health { address = \"9100\" }\n", `config.hcl:1,20-26: Invalid health address`},
		{"metrics { address = \"127.0.0.1:9090\" }\nhealth { address = \"127.0.0.1:9090\" }\n", `config.hcl:2,20-36: Address used twice`},
	} {
		_, diags := Parse([]byte(tc.src+prog), "config.hcl", "/srv")
		var all []string
		for _, d := range diags {
			all = append(all, FormatDiagnostic(d))
		}
		if joined := strings.Join(all, "\n"); !diags.HasErrors() || !strings.Contains(joined, tc.want) {
			t.Errorf("%q: want %q, have %q", tc.src, tc.want, joined)
		}
	}
}
