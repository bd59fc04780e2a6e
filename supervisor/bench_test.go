package supervisor

import (
	"os"
	"path/filepath"
	"testing"
)

// benchConfig is a production config of three programs, with most blocks
// set: what baton parses at start, on SIGHUP and on each saved change.
const benchConfig = `
log {
  level  = "info"
  format = "json"
}
control { socket = ".baton/control.sock" }
metrics { address = "127.0.0.1:9090" }
watch {
  debounce = "300ms"
}

program "api" {
  command = ["./bin/api", "-config", "api.toml"]
  env     = { API_DB = "api.db", GOMAXPROCS = "2" }
  listener "http" { address = "127.0.0.1:8080" }
  listener "admin" { address = "127.0.0.1:8081" }
  ready {
    http     = "/healthz"
    listener = "admin"
    timeout  = "20s"
  }
  stop {
    signal  = "SIGTERM"
    timeout = "30s"
  }
  restart {
    policy      = "always"
    backoff     = "1s"
    max_backoff = "30s"
    reset_after = "60s"
  }
  log {
    file      = "logs/api.log"
    max_size  = "10MB"
    max_files = 5
  }
}

program "orders" {
  command = ["./bin/orders"]
  env     = { ORDERS_DB = "orders.db" }
  listener "http" { address = "unix:run/orders.sock" }
  ready { timeout = "10s" }
  watch { paths = ["templates"] }
  build {
    command = ["go", "build", "-o", "{output}", "./examples/orders"]
    watch   = ["examples/orders", "child", "internal", "go.mod", "go.sum"]
    exclude = ["*_test.go"]
  }
}

program "worker" {
  command   = ["./bin/worker"]
  clean_env = true
  env       = { QUEUE = "default" }
  listener "metrics" { address = "127.0.0.1:0" }
  ready { delay = "2s" }
  restart { policy = "on-failure" }
}
`

func BenchmarkParseConfig(b *testing.B) {
	dir := b.TempDir()
	src := []byte(benchConfig)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		f, diags := ParseConfig(src, "config.hcl", dir)
		if diags.HasErrors() || len(f.Programs) != 3 {
			b.Fatalf("want 3 programs, have %v", diags)
		}
	}
}

// BenchmarkSocketOpen is the cost of a listener the first time baton needs
// it: socket, bind, listen, close. It is paid once per address, not per
// handover.
func BenchmarkSocketOpen(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := openSocket("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s.close()
	}
}

// BenchmarkSocketPassing is the socket work of each handover on a socket
// that is already open: the reload acquires it for the new config, the new
// generation holds it, then the old config and the old generation release
// it. The descriptor itself reaches the child through fork and exec, which
// the handover benchmark (go run ./bench) measures with the process start.
func BenchmarkSocketPassing(b *testing.B) {
	t := newSockets()
	ls := []Listener{{Name: "http", Address: "127.0.0.1:0"}, {Name: "admin", Address: "127.0.0.1:0"}}
	serving, err := t.acquireAll("orders", ls)
	if err != nil {
		b.Fatal(err)
	}
	defer t.releaseAll(serving)
	b.ReportAllocs()
	for b.Loop() {
		ss, err := t.acquireAll("orders", ls)
		if err != nil {
			b.Fatal(err)
		}
		t.hold(ss)
		t.releaseAll(ss)
		t.releaseAll(ss)
	}
	if s := serving[0]; s.refs != 1 || s.file == nil {
		b.Fatalf("want the serving socket open with 1 reference, have %d", s.refs)
	}
}

// BenchmarkNotifySocket is the other socket of a new generation: its own
// notify socket, created when it starts and removed when it exits.
func BenchmarkNotifySocket(b *testing.B) {
	dir, err := os.MkdirTemp("", "baton-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "orders.1.sock")
	b.ReportAllocs()
	for b.Loop() {
		n, err := listenNotify(path)
		if err != nil {
			b.Fatal(err)
		}
		n.close()
	}
}
