# A warm pool: three exec sandboxes kept running and unclaimed, so that
# `akctl claim python-warm` hands one out in milliseconds instead of
# waiting for Nomad to place and start it. A claimed sandbox lives for
# claim_ttl (unless the claim asks for another TTL), is never returned to
# the pool, and the pool makes a new one to stay at size.
pool "python-warm" {
  size      = 3
  max       = 20
  claim_ttl = "1h"

  labels = {
    team = "platform"
  }

  sandbox {
    driver    = "exec"
    command   = ["/bin/sleep", "infinity"]
    vcpus     = 0.25
    memory_mb = 256
  }
}
