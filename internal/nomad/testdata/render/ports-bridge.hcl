sandbox "web" {
  profile = "permissive"
  image   = "python:3.12-alpine"
  command = ["python", "-m", "http.server", "8080"]
  port "http" {
    to = 8080
  }
  port "admin" {
    to     = 9000
    static = 19000
  }
}
