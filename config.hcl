# baton's config for the orders example (examples/orders).
#
#   go run ./cmd/baton dev   builds the example, runs it on 127.0.0.1:8080,
#                            and rebuilds and hands over on every source change
#   go run ./cmd/baton run   runs ./bin/orders and hands over when it is replaced
#
# Relative paths are relative to this file's directory.

# log { level = "info" } shows baton's own events; baton dev shows only
# warnings of them unless the level is set here.
log { format = "text" }

program "orders" {
  command = ["./bin/orders"]
  env     = { ORDERS_DB = "orders.db" }

  listener "http" {
    address = "127.0.0.1:8080"
  }

  ready { timeout = "10s" }
  stop {
    signal  = "SIGTERM"
    timeout = "30s"
  }

  # baton dev: build the example from its sources, into a fresh path for
  # each build, and watch the packages it is made of.
  build {
    command = ["go", "build", "-o", "{output}", "./examples/orders"]
    watch   = ["examples/orders", "child", "internal", "go.mod", "go.sum"]
    exclude = ["*_test.go"]
  }
}
