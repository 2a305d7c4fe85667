# A locked-down sandbox: no network, a read-only root filesystem, a small
# memory ceiling, instructions injected as a file and an API key read from
# a Nomad Variable when the task starts (the value never passes through
# the controller). It removes itself eight hours after it is created.
sandbox "reviewer" {
  profile = "restrictive"
  image   = "python:3.12-alpine"
  command = ["sleep", "infinity"]

  labels = {
    team = "security"
    tier = "untrusted"
  }

  env = {
    LOG_LEVEL = "info"
  }

  file "/workspace/AGENTS.md" {
    content = file("AGENTS.md")
    mode    = "0444"
  }

  secret "OPENAI_API_KEY" {
    variable = "agentkernel/secrets/openai"
    key      = "api_key"
  }

  ttl       = "8h"
  on_expiry = "delete"
}
