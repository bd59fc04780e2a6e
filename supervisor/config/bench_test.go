package config

import "testing"

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

func BenchmarkParse(b *testing.B) {
	dir := b.TempDir()
	src := []byte(benchConfig)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		f, diags := Parse(src, "config.hcl", dir)
		if diags.HasErrors() || len(f.Programs) != 3 {
			b.Fatalf("want 3 programs, have %v", diags)
		}
	}
}
