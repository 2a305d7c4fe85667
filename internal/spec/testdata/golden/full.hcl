variable "team" {
  type    = string
  default = "ml"
}

locals {
  image = "python:3.12-alpine"
}

sandbox "agent-1" {
  namespace = "default"
  driver    = "docker"
  image     = local.image
  command   = ["sh", "-c", "sleep infinity"]
  profile   = "moderate"

  vcpus     = 1
  memory_mb = 512

  network = "bridge"
  port "http" {
    to     = 8080
    static = 0
  }
  read_only = true

  env    = { LOG_LEVEL = "debug" }
  labels = { team = var.team }

  file "/workspace/AGENTS.md" {
    content = "Be careful with {{ templates }} and $${interpolation}.\n"
    mode    = "0644"
  }
  secret "OPENAI_API_KEY" {
    variable = "agentkernel/secrets/openai"
    key      = "api_key"
  }

  ttl       = "8h"
  on_expiry = "delete"
  state     = "running"

  placement {
    datacenters = ["dc1"]
    node_pool   = "sandboxes"
    constraint {
      attribute = "$${node.class}"
      value     = "agents"
    }
  }
}
