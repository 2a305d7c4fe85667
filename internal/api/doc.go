// Package api owns the controller's HTTP+JSON API: the routes akctl, GitOps
// tools and dashboards call to apply, diff, read, delete and watch sandboxes,
// plus the health, readiness and metrics endpoints.
//
// The store is the source of truth and the API only talks to it (and, for
// diff, to Nomad's planner): writes are accepted while Nomad is unreachable,
// and the reconciler catches up once it is back. Readiness is reported on
// /readyz and never blocks a request.
package api
