sandbox "locked" {
  profile = "restrictive"
  image   = "python:3.12-alpine"
  command = ["sleep", "infinity"]
  env     = { LOG_LEVEL = "info" }
  file "/workspace/AGENTS.md" {
    content = "Work only in /workspace.\n"
    mode    = "0444"
  }
  secret "OPENAI_API_KEY" {
    variable = "agentkernel/secrets/openai"
    key      = "api_key"
  }
  secret "GH_TOKEN" {
    variable = "nomad/jobs/agentkernel-locked"
    key      = "gh-token"
  }
}
