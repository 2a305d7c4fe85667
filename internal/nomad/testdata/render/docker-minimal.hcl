sandbox "hello" {
  image = "python:3.12-alpine"
}
