# A small fleet sharing settings through a variable and locals. Override
# the team with `-var team=infra` or AKCTL_VAR_team=infra.
variable "team" {
  type        = string
  default     = "ml"
  description = "Team that owns the fleet; becomes a label."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.team))
    error_message = "The team must be a lowercase name."
  }
}

locals {
  image = "python:3.12-alpine"
  labels = {
    team  = var.team
    fleet = "research"
  }
}

sandbox "research-1" {
  image     = local.image
  labels    = local.labels
  vcpus     = 0.5
  memory_mb = 512
}

sandbox "research-2" {
  image     = local.image
  labels    = merge(local.labels, { role = "reviewer" })
  vcpus     = 0.5
  memory_mb = 512
}

sandbox "research-web" {
  profile = "permissive" # bridge network, 1024 MB
  image   = local.image
  command = ["python", "-m", "http.server", "8080"]
  labels  = local.labels

  port "http" {
    to = 8080
  }

  placement {
    datacenters = ["dc1"]
  }
}
