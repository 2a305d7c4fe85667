# A second sandbox, in a file of its own: deleting this file and merging
# makes the apply job prune the sandbox (it belongs to the apply set).
sandbox "agent-beta" {
  driver    = "raw_exec"
  network   = "host"
  command   = ["/bin/sleep", "infinity"]
  vcpus     = 0.1
  memory_mb = 64

  labels = {
    team = "platform"
  }
}
