sandbox "hostnet" {
  image   = "alpine:3"
  network = "host"
  port "http" {}
}
