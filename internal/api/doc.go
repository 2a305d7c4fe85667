// Package api owns the controller's HTTP+JSON API: the routes akctl, GitOps
// tools and dashboards call to apply, diff, read, delete and watch sandboxes,
// plus the health, readiness and metrics endpoints.
//
// The store is the source of truth and the API only talks to it (and, for
// diff, to Nomad's planner): writes are accepted while Nomad is unreachable,
// and the reconciler catches up once it is back. Readiness is reported on
// /readyz and never blocks a request.
//
// When the controller runs as several instances (Options.Cluster), one
// leads and only its store takes writes and has live status: the others
// forward writes to it, and reads too unless a read says ?stale=true, in
// which case, or when the leader cannot be reached, they answer from their
// own copy and say so in the X-Agentkernel-* headers (see cluster.go).
package api
