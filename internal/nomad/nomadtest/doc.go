// Package nomadtest owns the Nomad test server: an in-memory agent that
// answers the Nomad HTTP API in the wire format of a real Nomad 2.0.5 dev
// agent, with a simulated scheduler and client and fault injection. Tests
// and `controller -dev` point the real github.com/hashicorp/nomad/api client
// at it exactly as at a cluster.
//
// What it reproduces, each following the recorded facts it cites: job
// register with check-and-set and validation errors, server-filled
// defaults, stop and purge, list with prefix, go-bexpr filters over the full
// job, meta=true and pagination tokens, plan with diff and update counts,
// allocations, summaries, evaluations, namespaces, variables with
// check-and-set, blocking queries with Nomad's wait and wake-up rules, and
// the NDJSON event stream with its bounded resume buffer. The scheduler
// places one allocation per group count (in the request, or after
// Options.EvalDelay), moves it pending -> running after
// Options.SchedulingDelay, replaces allocations on destructive changes, and
// applies restart and reschedule policies when a task dies. Responses are
// gzipped for clients that accept it, as the agent does.
//
// Use it in tests as
//
//	srv := nomadtest.New(nomadtest.Options{})
//	if err := srv.Start(); err != nil { ... }
//	defer srv.Close()
//	client, _ := api.NewClient(&api.Config{Address: srv.URL()})
//
// or mount it as an http.Handler. Under testing/synctest, serve it over an
// in-memory listener: every timer it uses comes from the time package.
//
// # Faults
//
// Faults are injected from Go through methods on *Server (SetLatency,
// FailRequests, NoLeader, Outage, StopListening/Resume, CutEventStreams,
// JumpIndex, KillTask, FailTask, ExitTask, RunJob, StopJob, ResetFaults)
// or over HTTP under /_fault/, a prefix Nomad does not use. Fault endpoints
// take POST with an optional JSON body and answer 204, or 400 with a text
// error; they bypass the ACL check, injected faults and request counters.
//
//	POST /_fault/latency      {"Latency":"200ms"}                 delay every API request
//	POST /_fault/errors       {"Status":500,"Body":"boom","Count":3,"Duration":"10s","PathPrefix":"/v1/jobs"}
//	POST /_fault/no-leader    {"Count":0,"Duration":"5s"}         500 "No cluster leader"
//	POST /_fault/outage       {"Duration":"2s"}                   close the listener, reopen on the same address
//	POST /_fault/cut-streams                                      end every open event stream
//	POST /_fault/jump-index   {"By":1000}                         index gap past the event buffer
//	POST /_fault/kill-task    {"Namespace":"default","JobID":"x"} kill -9: restart, then reschedule policy
//	POST /_fault/fail-task    {"JobID":"x"}                       unrecoverable task failure
//	POST /_fault/exit-task    {"JobID":"x","ExitCode":0}          task exits (batch exit 0 completes)
//	POST /_fault/stop-job     {"JobID":"x","Purge":true}          as `nomad job stop [-purge]`
//	POST /_fault/reset                                            clear latency and error faults
//	GET  /_fault/requests                                         request counts by "METHOD /route"
//	DELETE /_fault/requests                                       zero the counts
//
// For Count and Duration, zero means unbounded; an error fault with both
// zero lasts until reset.
//
// # Where it differs from a real agent
//
// Nothing in the controller may rely on these; they are listed so that
// no test does either.
//
//   - The scheduler plans inside the register request unless EvalDelay is
//     set, so a blocking list woken by a register returns the plan's
//     index, one above the register's.
//   - Job and allocation bodies are encoded from the nomad/api structs: a
//     few server-only job fields are missing, allocations carry no
//     resource or metrics fields, and unset task times read as year 1
//     rather than null.
//   - Not simulated: deployments and their events, restart jitter (the
//     delay is exact), variable locks (lock operations answer 400), ACL
//     policies (one management token; a denied event stream closes at
//     once rather than after a while), alloc exec, job version diffs.
//   - Plan diffs cover job fields, Meta, Datacenters, group Count and
//     Meta, and task Driver, Config, Env, Meta and Resources.
//   - The event buffer counts NDJSON lines rather than raft indexes, and
//     client updates are batched per evaluation, not across jobs.
//   - At most 50 finished evaluations are kept per job; unknown paths get
//     Go's default 404 body.
package nomadtest
