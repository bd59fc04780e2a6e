# /etc/baton/config.hcl for the units in this directory: the orders
# example in production, behind systemd.

log {
  level  = "info"
  format = "json"                       # journald keeps it; jq reads it
}

control { socket = "/run/baton/control.sock" }
metrics { address = "127.0.0.1:9090" }

program "orders" {
  command = ["/usr/local/bin/orders"]
  dir     = "/var/lib/orders"
  env     = { ORDERS_DB = "/var/lib/orders/orders.db", GIN_MODE = "release" }
  user    = "orders"                    # baton runs as root; the program does not

  listener "http" {
    address = "127.0.0.1:8080"          # used when baton.socket does not pass one
  }

  ready   { timeout = "30s" }
  stop    { timeout = "30s" }
  restart {
    policy      = "always"
    backoff     = "1s"
    max_backoff = "30s"
  }
  log {
    file      = "/var/log/baton/orders.log"
    max_size  = "50MB"
    max_files = 5
  }
}
