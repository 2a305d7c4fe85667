sandbox "restrictive" {
  profile = "restrictive"
  image   = "alpine:3"
}

sandbox "permissive" {
  profile = "permissive"
  image   = "alpine:3"
}

sandbox "exec" {
  driver  = "exec"
  command = ["/bin/sleep", "infinity"]
  vcpus   = 0.25
}

sandbox "raw" {
  driver  = "raw_exec"
  network = "host"
  command = ["/bin/sleep", "infinity"]
  state   = "stopped"
}
