sandbox "raw" {
  driver  = "raw_exec"
  network = "host"
  command = ["/bin/sleep", "infinity"]
  file "/workspace/AGENTS.md" {
    content = "hi\n"
  }
}
