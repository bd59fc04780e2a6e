# The orders example on Nomad: Nomad places and rolls the allocations,
# baton runs inside each one (raw_exec, or exec for isolation) and hands
# the listening socket from one generation of the server to the next.
#
#   nomad job run orders.nomad.hcl
#
#   - kill_signal: Nomad sends SIGINT by default; baton, like the child
#     package, takes SIGINT and SIGTERM alike. SIGTERM is set here to say
#     it.
#   - kill_timeout is above baton's shutdown_delay plus the program's stop
#     timeout, so that Nomad never SIGKILLs a draining baton. The Nomad
#     client caps it at its max_kill_timeout (30 s by default): the stop
#     timeout below (20 s, into which the child fits its drain bounds)
#     keeps the sum under it.
#   - shutdown_delay (group) waits between the service's deregistration
#     and the signal; baton's own shutdown_delay then fails /readyz for
#     the load balancers that check it directly (HAProxy, a cloud LB).
#   - update: one allocation at a time, a canary first, and a deployment
#     that fails its checks is reverted.
#   - the template renders baton's config; when it changes (a Nomad
#     variable, a Consul key), Nomad sends SIGHUP and baton reloads it,
#     handing over every program without dropping a request.
#
# examples/manifests_test.go parses this file, renders the template with
# stand-in values, parses the result with baton's own parser, and checks
# the sums against the child package's defaults.
job "orders" {
  datacenters = ["dc1"]
  type        = "service"

  update {
    max_parallel     = 1
    canary           = 1
    auto_revert      = true
    auto_promote     = true
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "2m"
  }

  group "orders" {
    count = 3

    network {
      port "http" {
        static = 8080
      }
      port "health" {
        static = 9100
      }
    }

    shutdown_delay = "5s"

    service {
      name     = "orders"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        port     = "health"
        path     = "/readyz"
        interval = "2s"
        timeout  = "1s"
      }
    }

    task "baton" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/baton"
        args    = ["run", "-config", "local/config.hcl"]
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      template {
        destination   = "local/config.hcl"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          shutdown_delay = "2s"
          health { address = "{{ env "NOMAD_IP_health" }}:{{ env "NOMAD_PORT_health" }}" }
          control { socket = "{{ env "NOMAD_TASK_DIR" }}/baton/control.sock" }
          log { format = "json" }

          program "orders" {
            command = ["/usr/local/bin/orders"]
            env     = { ORDERS_DB = "{{ env "NOMAD_ALLOC_DIR" }}/data/orders.db" }
            listener "http" { address = "{{ env "NOMAD_IP_http" }}:{{ env "NOMAD_PORT_http" }}" }
            stop { timeout = "20s" }
          }
        EOT
      }
    }
  }
}
