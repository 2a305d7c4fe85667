# For clusters without Docker: the exec driver runs the command in a chroot
# with its own PID and mount namespaces, as the unprivileged user nobody.
# It has no image and cannot make the root filesystem read-only.
sandbox "exec-agent" {
  driver    = "exec"
  command   = ["/bin/sleep", "infinity"]
  vcpus     = 0.25
  memory_mb = 256

  labels = {
    team = "platform"
  }
}
