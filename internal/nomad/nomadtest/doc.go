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
// allocations (the list in create order with go-bexpr filters over the
// full allocation, pagination and task_states=false), summaries,
// evaluations, namespaces, variables with
// check-and-set, variable locks with their TTL and delay timers, ACL
// policies and tokens enforced endpoint by endpoint, blocking queries with
// Nomad's wait and wake-up rules, and the NDJSON event stream with its
// bounded resume buffer. The scheduler places one allocation per group
// count, replaces allocations on destructive changes, and applies restart
// and reschedule policies when a task dies. The simulated client answers
// exec, file-system and log requests for the allocations it runs (see
// Exec, files and logs). Responses are gzipped for clients that accept
// it, as the agent does.
//
// # Timing and deployments
//
// By default the server keeps the timing of the recorded agent
// (testdata/facts/lifecycle): a register answers first and the scheduler
// plans Options.EvalDelay (5ms) later, so a read right after a destructive
// update still sees the previous version desired run and running; the
// client reports the stopped allocation complete and the placed one
// received Options.ClientDelay (150ms) after the plan, the placed one
// running Options.SchedulingDelay (450ms) after it, and healthy its
// group's min_healthy_time later. A service job whose group has an update
// strategy with max_parallel above 0 (Nomad fills in 1 when the job has no
// update block) gets a deployment in the plan that starts a version; the
// deployment watcher's evaluation comes 1.05s after the allocation is
// healthy, and 0.25s later the deployment is successful and the version
// stable, which moves the job's ModifyIndex but not its JobModifyIndex or
// Version. A newer version or a stop cancels a running deployment; an
// allocation failing before it is healthy fails it. With max_parallel 0
// there is no deployment, as recorded. Every step is its own write with
// the recorded events, payloads included: the lifecycle conformance tests
// replay both recorded variants and compare the event counts per phase,
// the event sequence, the payload fields and the allocation timeline.
//
// Options.Instant does every step at once, inside the request: for tests
// that are not about placement timing.
//
// Use it in tests as
//
//	srv := nomadtest.New(nomadtest.Options{})
//	if err := srv.Start(); err != nil { ... }
//	defer srv.Close()
//	client, _ := api.NewClient(&api.Config{Address: srv.URL()})
//
// or mount it as an http.Handler. Under testing/synctest, serve it over an
// in-memory listener: every timer it uses comes from the time package,
// the lock timers included.
//
// # Exec, files and logs
//
// The client endpoints work on real processes and real directories, on
// the machine running the server:
//
//	GET /v1/client/allocation/:id/exec      WebSocket: stdin, tty_size; stdout, stderr, exit code
//	GET /v1/client/fs/ls|stat/:id?path=     JSON file info
//	GET /v1/client/fs/cat|readat/:id?path=  the file's bytes
//	GET /v1/client/fs/stream/:id?path=      framed, followed, `{}` heartbeats
//	GET /v1/client/fs/logs/:id?task=&type=  a task's stdout or stderr, plain or framed, followed or not
//
// Each allocation the client has received gets a directory laid out as a
// Nomad client's, alloc/{data,logs,tmp} and <task>/{local,secrets,tmp,
// private}, with empty alloc/logs/<task>.stdout.0 and .stderr.0, under
// Options.AllocDir or a temporary directory. It is made on the first of
// these requests for the allocation, so allocations nobody looks into
// cost nothing, and removed when the job is purged and by Close.
//
// Exec runs the command as a real local process, as the raw_exec driver
// would: in the task's directory, with the NOMAD_* variables of the task
// (NOMAD_ALLOC_DIR, NOMAD_TASK_DIR, NOMAD_ALLOC_ID, ...), the task's env
// block, and PATH and HOME of the server's process; on a pseudo-terminal
// of the size the client sends with tty=true. It needs the task running.
// Closing the WebSocket kills the command's process group, and so do a
// stop or restart of the task, a purge and Close. The simulated task
// itself runs nothing, so its logs hold only what is written to those
// files, by an exec for one, which is also how to feed them on a real
// raw_exec agent. nomad/api's Allocations().Exec and AllocFS() work
// against the server as against an agent: the node advertises the
// listener's address as its HTTPAddr, for their direct connection, or
// none when the server is served over a listener it does not own, such as
// a MemNet's, which sends them through the server at once. Exec works in
// a synctest bubble too.
//
// The answers follow the recorded agent (111, 112, lifecycle/fs): an
// exec error is a close frame, 1011 with the text of an agent-side 500
// ("task not found", "rpc error: ... failed to start command: ...") and
// 1008 for the rest (Unknown allocation "<id>"); cat and readat answer
// every error 200 text/plain with the error as the body ("Path escapes
// the alloc directory", "stat <host path>: no such file or directory");
// logs of an unknown task are 400.
//
// # ACLs
//
// Options.ACLToken turns ACLs on with that secret as the bootstrap
// management token; Options.ACLs alone turns them on un-bootstrapped, for
// POST /v1/acl/bootstrap. Policies in Nomad's policy language and client
// tokens come from SetACLPolicy and CreateACLToken, or from the ACL
// endpoints (/v1/acl/policy, /v1/acl/token, /v1/acl/token/self):
//
//	srv := nomadtest.New(nomadtest.Options{ACLToken: root})
//	err := srv.SetACLPolicy("controller", `namespace "default" { policy = "write" }`)
//	secret, err := srv.CreateACLToken("controller", "controller")
//
// Every endpoint then checks what its Nomad counterpart checks: list-jobs,
// read-job or submit-job in the namespace, variables read, write, list or
// destroy on the path, node read for nodes, management for namespace and
// ACL writes; alloc-exec for exec, and alloc-node-exec as well into a task
// whose driver has no file-system isolation (raw_exec, mock_driver),
// read-fs for the file system, read-fs or read-logs for logs. A denial is
// 403 "Permission denied" (more/ README section 3), except where the
// agent answers otherwise: a 1011 close frame for exec, and 200 with the
// text as the body for cat and readat.
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
//   - Every delay is one fixed value, the recorded median, where the
//     agent varies (plan 1-10ms after the register, first client report
//     60-320ms and running 360-930ms after the plan, restarts with up to
//     25% jitter). The agent's client sometimes reports an allocation
//     received and running in one write (40 @14, the first allocation of
//     maxparallel0); this client always takes two, unless
//     SchedulingDelay is not longer than ClientDelay.
//   - Job bodies are encoded from the nomad/api struct: GET /v1/job lacks
//     a few server-only fields (events carry the recorded keys), and unset
//     task times read as year 1 rather than null. An allocation's
//     resources are the group's asks on the one node, with dynamic ports
//     from 20000 up, and its metrics carry fixed scores.
//   - Deployments: no canaries, auto-revert, auto-promote, progress or
//     healthy deadlines, and no deployment endpoints that write (promote,
//     pause, fail, alloc health). A destructive update replaces every
//     allocation of a group in one plan, whatever max_parallel says; an
//     in-place update starts a deployment and health is reported again;
//     a rescheduled allocation joins the version's running deployment. A
//     purge deletes the job's deployments, which the agent keeps until
//     garbage collection.
//   - Not simulated: job version diffs, node events other than the
//     client's allocation updates, allocation stats, restart, signal and
//     checks, job actions. The agent also makes writes
//     that send no event (default.events skips 4130 and 4150); here every
//     write sends its events, so indexes run denser.
//   - ACLs: no roles, auth methods, workload identities, token expiry or
//     Sentinel. Policies may hold node_pool, host_volume, quota, plugin,
//     agent and operator rules, but no endpoint here needs them; the
//     fine-grained job capabilities (register-job, purge-job, ...) are
//     accepted, while the endpoints check submit-job. Hashes of policies
//     and tokens are not the agent's.
//   - An unknown token is refused before the request is parsed, and most
//     capability checks come before the query string is: where the agent
//     answers a malformed request 400 first, this server may answer 403.
//     Job registers, variable writes and locks check in the agent's order
//     (more/ 361).
//   - A denied event stream closes after one second; the agent closes it
//     after anything from 0.3s to more than 25s (more/ 326). Event topics
//     other than Job, Allocation, Evaluation, Deployment, Service and Node,
//     Variable among them, are for management tokens here.
//   - The ACL agent planned the identical spec of a running batch job as
//     an in-place update (more/ 317); this server answers ignore, as the
//     agent without ACLs did (516).
//   - Plan diffs cover job fields, Meta, Datacenters, group Count and
//     Meta, and task Driver, Config, Env, Meta and Resources.
//   - The event buffer counts NDJSON lines rather than raft indexes, and
//     client updates are batched per evaluation, not across jobs.
//   - At most 50 finished evaluations are kept per job; unknown paths get
//     Go's default 404 body.
//   - The client endpoints: a task runs nothing, so its directory holds
//     no executor.out and its secrets no .nomad-mount or api.sock, and its
//     logs are never rotated; exec passes the task PATH and HOME of the
//     server's environment where the agent passes a raw_exec task all of
//     its own; on a terminal, closing stdin types Ctrl-D where the agent
//     closes the terminal; an exec request from a browser page, one that
//     carries an Origin header, is refused 403; frames
//     are sent as the file is read, not batched over 200ms, with `{}`
//     only while a followed file has nothing new; processes an exec left
//     running after its session ended are not killed with the task.
//   - Job validation is narrower: a node pool that does not exist, and a
//     task kill timeout longer than the group's progress deadline, are
//     accepted where the agent refuses them with 500 (both seen with make
//     test-nomad).
package nomadtest
