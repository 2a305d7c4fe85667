# Nomad ACL policy for the agentkernel controller: the least it needs.
#
# Attach it to the workload identity of the job in examples/controller.nomad.hcl
# (every instance then gets it through NOMAD_TOKEN, with no token to hand out):
#   nomad acl policy apply -namespace default -job agentkernel-controller \
#     agentkernel-controller examples/controller-policy.hcl
#
# For a controller run outside Nomad, attach it to an ACL token instead:
#   nomad acl policy apply agentkernel-controller examples/controller-policy.hcl
#   nomad acl token create -name agentkernel-controller -policy agentkernel-controller
#
# It grants nothing on nodes, agents, operators or quotas. akctl validate and
# akctl apply skip this file when they load examples/: a name ending in
# -policy.hcl or .policy.hcl marks a Nomad ACL policy, not sandbox declarations.

# The controller's own namespace (where the job runs) is also a namespace
# sandboxes may use.
namespace "default" {
  # list-jobs:  listing jobs.
  # read-job:   reading a job and its allocations, and the event stream's
  #             Job and Allocation topics.
  # submit-job: register, plan, stop and purge.
  #
  # Working inside sandboxes through the controller (exec, files, logs)
  # needs more, and is off without it: add "alloc-exec", "read-fs" and
  # "read-logs" here and in each sandbox namespace, and "alloc-node-exec"
  # where raw_exec sandboxes run (Nomad asks for it for a driver without
  # file-system isolation). Whoever holds the controller's API token can
  # then run commands in every sandbox of those namespaces.
  capabilities = ["list-jobs", "read-job", "submit-job"]

  # The leader lock (agentkernel/leader; taking, renewing and releasing it
  # needs write), the replicated sandboxes (agentkernel/sandboxes/...), the
  # chunks of large ones (agentkernel/blobs/...; destroy also collects the
  # unused ones) and the marker (agentkernel/meta). Match variable_prefix in
  # the controller's ha block; the glob covers every path below the prefix.
  variables {
    path "agentkernel/*" {
      capabilities = ["read", "write", "list", "destroy"]
    }
  }
}

# One block like this for each further namespace sandboxes are declared in.
namespace "sandboxes" {
  capabilities = ["list-jobs", "read-job", "submit-job"]
}
