# The agentkernel controller as a Nomad job, highly available: three
# instances on three nodes; the one holding the Nomad Variable lock
# agentkernel/leader reconciles, the others follow and forward writes to it.
#
# Before the first run (docs/running-on-nomad.md has the details):
#   nomad acl policy apply -namespace default -job agentkernel-controller \
#     agentkernel-controller examples/controller-policy.hcl
#   nomad var put nomad/jobs/agentkernel-controller api_token=<a long random token>
#   nomad job run -var image=<your controller image> examples/controller.nomad.hcl
#
# akctl validate and akctl apply skip this file when they load examples/: a
# name ending in .nomad.hcl marks a Nomad jobspec, not sandbox declarations.

variable "image" {
  type        = string
  description = "Container image whose entrypoint is the controller binary."
}

job "agentkernel-controller" {
  # The policy is attached to the job in this namespace, and the
  # controller keeps its lock and replicated state here.
  namespace   = "default"
  type        = "service"
  datacenters = ["*"]

  group "controller" {
    # Three instances survive the loss of any one node; two are the least
    # that gives a standby.
    count = 3

    # One instance per node (so at least three eligible nodes): two on the
    # same node would fail together.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "api" {
        to = 7474
      }
    }

    # Registered with Nomad's own service catalogue; /readyz answers 200 on
    # the leader and on a follower that is in sync, so a rolling update
    # waits for each new instance to catch up before it stops the next.
    service {
      name     = "agentkernel-controller"
      provider = "nomad"
      port     = "api"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    # The data dir (the local store) lives in the allocation directory.
    # sticky and migrate carry it over to the replacement allocation, on
    # the same node or copied to another, so a restarted instance catches
    # up from where it was rather than from nothing.
    #
    # Alternative: a host volume per node, which outlives the job:
    #   volume "data" {
    #     type   = "host"
    #     source = "agentkernel-data"
    #   }
    # with, in the task, volume_mount { volume = "data" destination = "/data" }
    # and data_dir = "/data" in the rendered config below.
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 500 # MB
    }

    # One instance at a time, each healthy (its /readyz check passing)
    # before the next is replaced; a release that never gets healthy is
    # rolled back.
    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "3m"
      auto_revert      = true
    }

    # Restart in place a few times before Nomad reschedules elsewhere.
    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    task "controller" {
      driver = "docker"

      config {
        image = var.image
        args  = ["-config", "${NOMAD_TASK_DIR}/controller.hcl"]
        ports = ["api"]
      }

      # On SIGTERM the controller stops taking work, lets in-flight
      # reconciles finish (10 s at most) and releases the leader lock, so
      # a standby takes over without waiting for the lock's TTL.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # The workload identity, as NOMAD_TOKEN, is the controller's Nomad
      # token (nomad/api reads it like the nomad CLI). What it may do is
      # the policy attached to this job: examples/controller-policy.hcl.
      identity {
        env = true
      }

      # Alternative to the workload identity: a static ACL token kept in
      # the job's Nomad Variable (item nomad_token), rendered to a file and
      # named by nomad { token_file } in the config. Drop identity {} then.
      #   template {
      #     data        = "{{ with nomadVar \"nomad/jobs/agentkernel-controller\" }}{{ .nomad_token }}{{ end }}"
      #     destination = "secrets/nomad-token"
      #     perms       = "600"
      #   }

      # The API bearer token, from the job's Nomad Variable (the job's own
      # identity may read it without any policy); put it before the first
      # run. perms 600: the controller refuses a token file others can
      # read. If the image runs as a non-root user, set uid and gid here.
      template {
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/agentkernel-controller" }}{{ .api_token }}{{ end }}
        EOT
        destination = "secrets/api-token"
        perms       = "600"
        change_mode = "restart"
      }

      # The controller's config file. Nomad is reached through the Task
      # API socket of the local Nomad agent (no address or TLS to manage);
      # set nomad { address } to the servers' address instead if you
      # prefer. instance_id defaults to NOMAD_ALLOC_ID.
      template {
        data        = <<-EOT
        data_dir   = "{{ env "NOMAD_ALLOC_DIR" }}/data"
        listen     = "0.0.0.0:7474"
        token_file = "{{ env "NOMAD_SECRETS_DIR" }}/api-token"
        log_format = "json"

        nomad {
          address   = "unix://{{ env "NOMAD_SECRETS_DIR" }}/api.sock"
          namespace = "{{ env "NOMAD_NAMESPACE" }}"
        }

        ha {
          enabled         = true
          advertise_addr  = "http://{{ env "NOMAD_ADDR_api" }}"
          variable_prefix = "agentkernel"
          lock_ttl        = "15s"
          lock_delay      = "15s"
        }
        EOT
        destination = "local/controller.hcl"
        change_mode = "restart"
      }

      # The benchmark (docs/benchmarks.md) measured a peak RSS of 112 MB at 10,000
      # sandboxes.
      resources {
        cpu    = 500 # MHz
        memory = 256 # MB
      }
    }
  }
}
