package nomadtest

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/nomad/api"
)

// The simulated client. It reports alloc changes in batches, one raft write
// for every alloc that changed at the same moment, as the real client's
// 200ms status sync does (40 @21, @41). Each write carries the node too,
// whose LastAllocUpdateIndex it moves (lifecycle events: Node/
// AllocationUpdated after every client write).

// clientBatch collects the alloc updates of one client write.
type clientBatch struct {
	s        *Server
	idx      uint64
	deps     []*deployment
	allocEvs []event
	evalEvs  []event
	jobs     []*jobEntry
	after    []func() // writes that follow this one, e.g. reschedule evaluations
}

func (s *Server) newClientBatch() *clientBatch { return &clientBatch{s: s} }

// touch starts the write on its first alloc and stamps a with its index.
func (b *clientBatch) touch(a *alloc) uint64 {
	if b.idx == 0 {
		b.idx = b.s.nextIndex()
	}
	a.a.ModifyIndex = b.idx
	a.a.ModifyTime = b.s.now().UnixNano()
	if !slices.ContainsFunc(b.allocEvs, func(e event) bool { return e.Key == a.a.ID }) {
		b.allocEvs = append(b.allocEvs, b.s.allocEvent(b.idx, a, "AllocationUpdated"))
	}
	if je := b.s.jobOf(a); je != nil && !slices.Contains(b.jobs, je) {
		b.jobs = append(b.jobs, je)
	}
	return b.idx
}

// deployment adds a deployment whose counts the write changed.
func (b *clientBatch) deployment(d *deployment) {
	if !slices.Contains(b.deps, d) {
		b.deps = append(b.deps, d)
	}
}

// commit publishes the write: deployment, alloc and evaluation events, the
// job status changes they caused, then the node, in the recorded order
// (40 @41, default.events 4110).
func (b *clientBatch) commit() {
	if b.idx == 0 {
		return
	}
	s, idx := b.s, b.idx
	var evs []event
	for _, d := range b.deps {
		evs = append(evs, s.deploymentEvent(idx, d, "AllocationUpdated"))
	}
	if len(b.deps) > 0 {
		s.touch(idx, "deployment")
	}
	// Events carry the allocs as they ended in this write.
	for _, e := range b.allocEvs {
		if a := s.allocs[e.Key]; a != nil {
			e = s.allocEvent(idx, a, "AllocationUpdated")
		}
		evs = append(evs, e)
	}
	s.touch(idx, "allocs")
	evs = append(evs, b.evalEvs...)
	for _, je := range b.jobs {
		s.watch.fire(allocsKeyWatch(jobKey(je.job)))
		s.refreshSummary(idx, je)
		evs = append(evs, s.updateJobStatus(idx, je, "AllocationUpdated")...)
	}
	evs = append(evs, s.nodeEvent(idx))
	s.publish(idx, evs...)
	if len(s.execs) > 0 {
		ids := make([]string, 0, len(b.allocEvs))
		for _, e := range b.allocEvs {
			ids = append(ids, e.Key)
		}
		s.killStoppedExecsLocked(ids)
	}
	for _, f := range b.after {
		f()
	}
}

// scheduleClient has the client act on a plan: its first report after
// ClientDelay, with the stopped allocs complete and the placed ones
// received, then the placed ones running after SchedulingDelay, or in the
// first report when that is not later. The run step is timed from inside
// the receive step, never as a timer of its own: two timers due together
// wake in either order, and a run before its receive would leave the
// allocation pending for good.
func (s *Server) scheduleClient(start, stop []*alloc) {
	if len(start) == 0 && len(stop) == 0 {
		return
	}
	live := func(a *alloc) bool { return s.allocs[a.a.ID] == a }
	merged := s.opts.SchedulingDelay <= s.opts.ClientDelay
	s.after(s.opts.ClientDelay, func() {
		b := s.newClientBatch()
		for _, a := range stop {
			if live(a) {
				s.clientStop(b, a)
			}
		}
		for _, a := range start {
			if live(a) {
				s.clientReceive(b, a)
				if merged {
					s.clientRun(b, a)
				}
			}
		}
		b.commit()
		if merged {
			return
		}
		s.after(s.opts.SchedulingDelay-max(s.opts.ClientDelay, 0), func() {
			b := s.newClientBatch()
			for _, a := range start {
				if live(a) {
					s.clientRun(b, a)
				}
			}
			b.commit()
		})
	})
}

func (s *Server) jobOf(a *alloc) *jobEntry {
	return s.jobs[nsKey{a.a.Namespace, a.a.JobID}]
}

func (s *Server) group(a *alloc) *api.TaskGroup {
	for _, tg := range a.job.TaskGroups {
		if deref(tg.Name) == a.a.TaskGroup {
			return tg
		}
	}
	return nil
}

func (s *Server) taskEvent(typ, msg string, details map[string]string) *api.TaskEvent {
	if details == nil {
		details = map[string]string{}
	}
	return &api.TaskEvent{Type: typ, Time: s.now().UnixNano(), DisplayMessage: msg, Details: details}
}

// clientReceive is the client taking a placed alloc: its tasks are
// received and set up, and it stays pending (default.events 4108). A
// raw_exec or exec task without a command fails validation there and is
// not restarted (63, 64).
func (s *Server) clientReceive(b *clientBatch, a *alloc) {
	if a.a.DesiredStatus != desiredRun || a.a.ClientStatus != clientPending || a.received {
		return
	}
	a.received = true
	now := s.now()
	a.a.TaskStates = make(map[string]*api.TaskState)
	a.a.NetworkStatus = &api.AllocNetworkStatus{}
	invalid := false
	for _, t := range s.group(a).Tasks {
		evs := []*api.TaskEvent{
			s.taskEvent("Received", "Task received by client", nil),
			s.taskEvent("Task Setup", "Building Task Directory", map[string]string{"message": "Building Task Directory"}),
		}
		if (t.Driver == "raw_exec" || t.Driver == "exec") && t.Config["command"] == nil {
			invalid = true
			msg := "1 error occurred:\n\t* failed to parse config: Missing required argument \"command\"\n\n"
			evs = append(evs,
				s.taskEvent("Failed Validation", msg, map[string]string{"validation_error": msg}),
				s.taskEvent("Not Restarting", "Error was unrecoverable", map[string]string{"fails_task": "true", "restart_reason": "Error was unrecoverable"}))
			a.a.TaskStates[t.Name] = &api.TaskState{State: "dead", Failed: true, FinishedAt: now, Events: evs}
			continue
		}
		a.a.TaskStates[t.Name] = &api.TaskState{State: "pending", Events: evs}
	}
	if invalid {
		s.failAlloc(b, a)
		return
	}
	a.a.ClientDescription = "No tasks have started"
	b.touch(a)
}

// clientRun is the client starting the received alloc's tasks (4109).
func (s *Server) clientRun(b *clientBatch, a *alloc) {
	if a.a.DesiredStatus != desiredRun || a.a.ClientStatus != clientPending || !a.received {
		return
	}
	now := s.now()
	for _, ts := range a.a.TaskStates {
		ts.State = "running"
		ts.StartedAt = now
		ts.Events = append(ts.Events, s.taskEvent("Started", "Task started by client", nil))
	}
	a.a.ClientStatus = clientRunning
	a.a.ClientDescription = "Tasks are running"
	b.touch(a)
	b.after = append(b.after, func() { s.watchHealth(a) })
}

// clientStop is the client killing the tasks of an alloc the scheduler
// stopped; they end complete (81.allocs, 40 @122).
func (s *Server) clientStop(b *clientBatch, a *alloc) {
	if clientTerminal(a) {
		return
	}
	s.stopTimer(a.health)
	a.health = nil
	now := s.now()
	if a.a.TaskStates == nil {
		a.a.TaskStates = make(map[string]*api.TaskState)
	}
	for _, t := range s.group(a).Tasks {
		ts := a.a.TaskStates[t.Name]
		if ts == nil {
			ts = &api.TaskState{}
			a.a.TaskStates[t.Name] = ts
		}
		ts.State = "dead"
		ts.FinishedAt = now
		ts.Events = append(ts.Events,
			s.taskEvent("Killing", "Sent interrupt. Waiting 5s before force killing", nil),
			s.taskEvent("Terminated", "Exit Code: 130, Signal: 2", map[string]string{"exit_code": "130", "signal": "2"}),
			s.taskEvent("Killed", "Task successfully killed", nil))
	}
	a.a.ClientStatus = clientComplete
	a.a.ClientDescription = "All tasks have completed"
	b.touch(a)
}

// taskExited is a task of a running alloc ending with the given exit code.
// Exit 0 of a batch task completes the alloc (140); anything else, and any
// exit of a service task, goes through the restart policy (facts 4.11).
func (s *Server) taskExited(a *alloc, exitCode, signal int, unrecoverable bool) error {
	if a.a.DesiredStatus != desiredRun || a.a.ClientStatus != clientRunning {
		return fmt.Errorf("alloc %s is %s/%s, not running", a.a.ID, a.a.DesiredStatus, a.a.ClientStatus)
	}
	b := s.newClientBatch()
	defer b.commit()
	now := s.now()
	details := map[string]string{"exit_code": fmt.Sprint(exitCode), "signal": fmt.Sprint(signal)}
	term := s.taskEvent("Terminated", fmt.Sprintf("Exit Code: %d, Signal: %d", exitCode, signal), details)
	term.ExitCode, term.Signal = exitCode, signal
	for _, ts := range a.a.TaskStates {
		ts.Events = append(ts.Events, term)
	}
	if exitCode == 0 && signal == 0 && deref(a.job.Type) == "batch" {
		for _, ts := range a.a.TaskStates {
			ts.State, ts.FinishedAt = "dead", now
		}
		a.a.ClientStatus = clientComplete
		a.a.ClientDescription = "All tasks have completed"
		b.touch(a)
		return nil
	}
	policy := s.group(a).RestartPolicy
	attempts, interval, delay, mode := 0, time.Duration(0), time.Duration(0), ""
	if policy != nil {
		attempts, interval, delay, mode = deref(policy.Attempts), deref(policy.Interval), deref(policy.Delay), deref(policy.Mode)
	}
	a.restarts = slices.DeleteFunc(a.restarts, func(t time.Time) bool { return now.Sub(t) >= interval })
	if unrecoverable || len(a.restarts) >= attempts {
		msg := "Error was unrecoverable"
		if !unrecoverable {
			msg = fmt.Sprintf("Exceeded allowed attempts %d in interval %v and mode is %q", attempts, interval, mode)
		}
		for _, ts := range a.a.TaskStates {
			ts.State, ts.Failed, ts.FinishedAt = "dead", true, now
			ts.Events = append(ts.Events, s.taskEvent("Not Restarting", msg, map[string]string{"fails_task": "true", "restart_reason": msg}))
		}
		s.failAlloc(b, a)
		return nil
	}
	a.restarts = append(a.restarts, now)
	for _, ts := range a.a.TaskStates {
		ts.State = "pending"
		ts.Restarts++
		ts.LastRestart = now
		ts.Events = append(ts.Events, s.taskEvent("Restarting", fmt.Sprintf("Task restarting in %v", delay), map[string]string{"restart_reason": "Restart within policy"}))
	}
	// While a task waits to restart the alloc falls back to pending
	// (facts 4.11), and its health clock starts again when it runs.
	s.stopTimer(a.health)
	a.health = nil
	a.a.ClientStatus = clientPending
	a.a.ClientDescription = "No tasks have started"
	b.touch(a)
	restarts := len(a.restarts)
	s.afterFunc(delay, func() {
		if s.allocs[a.a.ID] != a || a.a.DesiredStatus != desiredRun || a.a.ClientStatus != clientPending || len(a.restarts) != restarts {
			return
		}
		b := s.newClientBatch()
		now := s.now()
		for _, ts := range a.a.TaskStates {
			ts.State = "running"
			ts.StartedAt = now
			ts.Events = append(ts.Events, s.taskEvent("Started", "Task started by client", nil))
		}
		a.a.ClientStatus = clientRunning
		a.a.ClientDescription = "Tasks are running"
		b.touch(a)
		b.after = append(b.after, func() { s.watchHealth(a) })
		b.commit()
	})
	return nil
}

// failAlloc marks an alloc failed in the client write b and, when its
// reschedule policy allows another attempt, creates the alloc-failure
// evaluation and, in the writes that follow, the delayed alloc-reschedule
// one, as in 40 @91-96. With no attempt left the job ends dead (40 @114,
// 141).
func (s *Server) failAlloc(b *clientBatch, a *alloc) {
	a.a.ClientStatus = clientFailed
	a.a.ClientDescription = "Failed tasks"
	idx := b.touch(a)
	// An alloc that fails before it was healthy fails its deployment.
	if d := s.deployments[a.a.DeploymentID]; d != nil && d.active() && a.a.DeploymentStatus == nil {
		s.setHealth(b, a, false)
	}
	s.stopTimer(a.health)
	a.health = nil
	je := s.jobOf(a)
	delay, ok := s.rescheduleDelay(a)
	if je == nil || !ok {
		return
	}
	fe := s.newEval(idx, je, "alloc-failure", evalPending)
	b.evalEvs = append(b.evalEvs, s.evalEvent(idx, fe, "AllocationUpdated"))
	b.after = append(b.after, func() {
		idx := s.nextIndex()
		re := s.newEval(idx, je, "alloc-reschedule", evalPending)
		re.e.PreviousEval = fe.e.ID
		re.e.WaitUntil = s.now().Add(delay)
		s.publish(idx, s.evalEvent(idx, re, "EvaluationUpdated"))

		idx = s.nextIndex()
		s.setEvalStatus(idx, fe, evalPending)
		a.a.FollowupEvalID = re.e.ID
		a.a.ModifyIndex, a.a.AllocModifyIndex = idx, idx
		s.touch(idx, "allocs")
		s.watch.fire(allocsKeyWatch(nsKey{a.a.Namespace, a.a.JobID}))
		s.publish(idx, s.evalEvent(idx, fe, "PlanResult"), s.allocEvent(idx, a, "PlanResult"))

		idx = s.nextIndex()
		s.setEvalStatus(idx, fe, evalComplete)
		s.publish(idx, s.evalEvent(idx, fe, "EvaluationUpdated"))

		s.afterFunc(delay, func() { s.reschedule(re, a) })
	})
}
