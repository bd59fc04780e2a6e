package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds the config decoder arbitrary files. It must never
// panic, and must either return a File or errors that all carry a
// position, never both a File and an error. The seed corpus (the repo's
// configs, testdata/fuzz) runs as a plain test in CI.
func FuzzParse(f *testing.F) {
	for _, path := range []string{"../../config.hcl", "../../examples/deploy/config.hcl"} {
		if b, err := os.ReadFile(path); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`program "a" {
  command = ["./a"]
  listener "http" { address = "127.0.0.1:0" }
}`))
	f.Add([]byte(`program "a" {
  command = ["a", "-x"]
  dir = "d"
  env = { A = "1" }
  clean_env = true
  listener "http" { address = "unix:a.sock" }
  ready {
    http = "/h"
    timeout = "1s"
  }
  stop {
    signal = "INT"
    timeout = "2s"
  }
  restart {
    policy = "on-failure"
    backoff = "1ms"
  }
  watch { paths = ["t"] }
  log { file = "a.log" }
  build {
    command = ["go", "build", "-o", "{output}"]
    exclude = ["*_test.go"]
  }
}
log { level = "debug" }
watch { poll = "1s" }
control { socket = "c.sock" }
metrics { address = "127.0.0.1:0" }`))
	f.Add([]byte("program \"a\" {\n  command = [\n"))
	f.Add([]byte(`program "a" { command = "x" }`))
	f.Add([]byte(`program "a" "b" {}`))
	f.Add([]byte(`${program}`))
	f.Add([]byte("\xff\xfe"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		file, diags := Parse(src, "fuzz.hcl", dir)
		if diags.HasErrors() {
			if file != nil {
				t.Fatal("a File with errors")
			}
			for _, d := range diags {
				if d.Subject == nil && !strings.Contains(d.Summary, "No program") {
					t.Fatalf("an error without a position: %s", FormatDiagnostic(d))
				}
			}
			return
		}
		if file == nil || len(file.Programs) == 0 {
			t.Fatal("no File and no error")
		}
		for _, p := range file.Programs {
			if len(p.Command) == 0 || len(p.Listeners) == 0 || !filepath.IsAbs(p.Dir) {
				t.Fatalf("a program that validated is incomplete: %+v", p)
			}
			p.Fingerprint()
		}
	})
}
