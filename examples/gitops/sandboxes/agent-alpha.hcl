# A small sandbox that any Nomad client with raw_exec can run: no image,
# the host's network, and a command that keeps it alive for agents to exec
# into. Replace with what your team needs (see docs/language.md).
sandbox "agent-alpha" {
  driver    = "raw_exec"
  network   = "host"
  command   = ["/bin/sleep", "infinity"]
  vcpus     = 0.1
  memory_mb = 64

  labels = {
    team = "platform"
  }
}
