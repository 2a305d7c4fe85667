sandbox "exec-agent" {
  driver    = "exec"
  command   = ["/bin/sleep", "infinity"]
  vcpus     = 0.25
  memory_mb = 256
  file "/workspace/AGENTS.md" {
    content = "hi\n"
  }
}
