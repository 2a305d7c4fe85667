sandbox "placed" {
  image     = "alpine:3"
  namespace = "agents"
  state     = "stopped"
  placement {
    datacenters = ["dc2", "dc1"]
    node_pool   = "sandboxes"
    constraint {
      attribute = "$${node.class}"
      value     = "agents"
    }
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }
  }
}
