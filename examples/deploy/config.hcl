# /etc/baton/config.hcl for the units in this directory: the orders
# example in production, behind systemd. The programs run as the system
# user orders, in its own directory:
#
#   sudo useradd --system --home-dir /var/lib/orders --create-home \
#     --shell /usr/sbin/nologin orders
#   sudo install -m 0755 orders /usr/local/bin/orders
#   sudo baton check -config /etc/baton/config.hcl   # says what is missing

log {
  level  = "info"
  format = "json"                       # journald keeps it; jq reads it
}

control { socket = "/run/baton/control.sock" }
metrics { address = "127.0.0.1:9090" }

# Behind a load balancer that checks /readyz (HAProxy: option httpchk GET
# /readyz, inter 500ms fall 2): at SIGTERM /readyz fails at once, and the
# programs keep serving for shutdown_delay (above inter × fall) before
# they drain. baton.service's TimeoutStopSec must exceed shutdown_delay
# plus the longest stop timeout (examples/manifests_test.go checks it).
shutdown_delay = "2s"
health { address = "127.0.0.1:9100" }   # the address the load balancer checks

# The schema first: a one-shot that runs to completion before orders
# starts (after = ["migrate"] below). If it fails, orders waits, and
# baton status says why; baton start migrate runs it again.
program "migrate" {
  command = ["/usr/local/bin/orders", "migrate"]
  type    = "oneshot"
  dir     = "/var/lib/orders"
  env     = { ORDERS_DB = "/var/lib/orders/orders.db" }
  user    = "orders"
}

program "orders" {
  command = ["/usr/local/bin/orders"]
  after   = ["migrate"]
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
  # A generation that hangs (three failed probes, or no WATCHDOG=1 for
  # 10 s: the child package pings) or grows past 512 MB is replaced by a
  # handover, then stopped.
  liveness {
    http     = "/healthz"
    interval = "10s"
    failures = 3
    watchdog = "10s"
  }
  limits {
    memory   = "512MB"
    interval = "5s"
  }

  # Each deploy serves beside the old generation for a minute before the
  # old one drains; one that fails its probe, answers 5xx to more than
  # 1 % of its requests or is twice as slow is reverted to the old one,
  # still warm. baton promote / baton revert end a bake early.
  bake {
    duration   = "60s"
    http       = "/healthz"
    interval   = "1s"
    max_errors = "1%"
    max_p99    = "2x"
  }
  log {
    file      = "/var/log/baton/orders.log"
    max_size  = "50MB"
    max_files = 5
  }
}
