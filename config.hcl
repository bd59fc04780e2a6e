# baton's config for the orders example (examples/orders).
# Relative paths are relative to this file's directory.

log {
  level  = "info"
  format = "text"
}

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
}
