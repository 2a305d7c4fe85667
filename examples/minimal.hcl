# The smallest useful declaration: a Docker sandbox with the moderate
# profile's defaults (no network, 1 vCPU, 512 MB), kept alive by
# `sleep infinity` so that an agent can exec into it.
sandbox "hello" {
  image = "python:3.12-alpine"
}
