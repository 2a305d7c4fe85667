package nomadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/nomad/api"
)

// The simulated scheduler and client. Every step is one raft write with its
// own index and event line, in the order the recorded agent produced them
// (40; lifecycle default.events):
//
//	register      N    Job/JobRegistered, then Evaluation/JobRegistered
//	plan          N+1  Evaluation, Deployment, Allocation and Job PlanResult, after EvalDelay
//	eval done     N+2  Evaluation/EvaluationUpdated
//	client        N+3  Allocation/AllocationUpdated (received), after ClientDelay
//	client        N+4  Allocation/AllocationUpdated (running), after SchedulingDelay
//	client        N+5  Deployment and Allocation AllocationUpdated (healthy), min_healthy_time later
//	watcher       N+6  Evaluation/AllocationUpdateDesiredStatus, 1.05s later
//	watcher       N+7  Deployment, Job (Stable) and Evaluation PlanResult, 0.25s later
//	eval done     N+8  Evaluation/EvaluationUpdated
//
// Options.Instant runs them all within the request that caused them.

const (
	descJobUpdate     = "alloc is being updated due to job update"
	descNotNeeded     = "alloc not needed due to job update"
	clientPending     = "pending"
	clientRunning     = "running"
	clientComplete    = "complete"
	clientFailed      = "failed"
	clientLost        = "lost"
	desiredRun        = "run"
	desiredStop       = "stop"
	evalPending       = "pending"
	evalComplete      = "complete"
	evalBlocked       = "blocked"
	triggerRegister   = "job-register"
	triggerDeregister = "job-deregister"
)

func (a *alloc) terminal() bool {
	if a.a.DesiredStatus != desiredRun {
		return true
	}
	switch a.a.ClientStatus {
	case clientComplete, clientFailed, clientLost:
		return true
	}
	return false
}

func clientTerminal(a *alloc) bool {
	switch a.a.ClientStatus {
	case clientComplete, clientFailed, clientLost:
		return true
	}
	return false
}

// jobStatus follows Nomad's state store: running while any allocation is
// non-terminal, else pending while any evaluation is, else dead. The one rule
// gives every transition recorded: pending -> running on placement, pending
// after a failed alloc waiting for its reschedule (40 @91), dead after stop
// (40 @121), and dead -> pending -> dead on an identical re-register of a
// finished batch job (more/ 604-607).
func (je *jobEntry) jobStatus() string {
	hasAlloc := false
	for _, a := range je.allocs {
		hasAlloc = true
		if !a.terminal() {
			return "running"
		}
	}
	hasEval := false
	for _, e := range je.evals {
		hasEval = true
		if e.e.Status == evalPending || e.e.Status == evalBlocked {
			return "pending"
		}
	}
	if hasEval || hasAlloc {
		return "dead"
	}
	return "pending"
}

// updateJobStatus recomputes the job's status and, when it changed, bumps the
// job's ModifyIndex (not its JobModifyIndex, facts 4.1) and returns the Job
// event for the write's line.
func (s *Server) updateJobStatus(idx uint64, je *jobEntry, evType string) []event {
	st := je.jobStatus()
	if deref(je.job.Status) == st {
		return nil
	}
	je.job.Status = ptr(st)
	je.job.ModifyIndex = ptr(idx)
	s.jobChanged(idx, je)
	return []event{s.jobEvent(idx, je.job, evType)}
}

func (s *Server) jobChanged(idx uint64, je *jobEntry) {
	s.touch(idx, "jobs")
	s.watch.fire(jobKeyWatch(jobKey(je.job)))
}

func jobKey(j *api.Job) nsKey { return nsKey{deref(j.Namespace), deref(j.ID)} }

// refreshSummary recounts the job summary and bumps its index when a count
// changed: GET /v1/jobs answers with the job_summary index too (facts 4.2).
func (s *Server) refreshSummary(idx uint64, je *jobEntry) {
	counts := make(map[string]api.TaskGroupSummary)
	for _, tg := range je.job.TaskGroups {
		counts[deref(tg.Name)] = api.TaskGroupSummary{Queued: je.queued[deref(tg.Name)]}
	}
	for _, a := range je.allocs {
		c := counts[a.a.TaskGroup]
		switch a.a.ClientStatus {
		case clientPending:
			c.Starting++
		case clientRunning:
			c.Running++
		case clientComplete:
			c.Complete++
		case clientFailed:
			c.Failed++
		case clientLost:
			c.Lost++
		}
		counts[a.a.TaskGroup] = c
	}
	if je.summary.counts != nil && mapsEqual(counts, je.summary.counts) {
		return
	}
	je.summary.counts = counts
	je.summary.ModifyIndex = idx
	s.touch(idx, "job_summary")
}

func mapsEqual(a, b map[string]api.TaskGroupSummary) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (s *Server) newEval(idx uint64, je *jobEntry, trigger, status string) *evalEntry {
	now := s.now().UnixNano()
	e := &api.Evaluation{
		ID:          newUUID(),
		Namespace:   deref(je.job.Namespace),
		Priority:    deref(je.job.Priority),
		Type:        deref(je.job.Type),
		TriggeredBy: trigger,
		JobID:       deref(je.job.ID),
		Status:      status,
		CreateIndex: idx,
		ModifyIndex: idx,
		CreateTime:  now,
		ModifyTime:  now,
	}
	ee := &evalEntry{e: e}
	je.evals = append(je.evals, ee)
	s.evals[e.ID] = ee
	s.touch(idx, "evals")
	s.gcEvals(je)
	return ee
}

// maxEvalsPerJob bounds the finished evaluations kept per job, as the
// agent's garbage collector would: every register adds one, and a
// controller re-registers often.
const maxEvalsPerJob = 50

func (s *Server) gcEvals(je *jobEntry) {
	for i := 0; len(je.evals) > maxEvalsPerJob && i < len(je.evals); {
		e := je.evals[i]
		if e.e.Status == evalPending || e.e.Status == evalBlocked {
			i++
			continue
		}
		delete(s.evals, e.e.ID)
		je.evals = append(je.evals[:i], je.evals[i+1:]...)
	}
}

func (s *Server) setEvalStatus(idx uint64, ee *evalEntry, status string) {
	ee.e.Status = status
	ee.e.ModifyIndex = idx
	ee.e.ModifyTime = s.now().UnixNano()
	s.touch(idx, "evals")
}

// plan is what the scheduler would do for the job as it now stands.
type plan struct {
	place       []placement
	stop        []*alloc // with stopDesc
	stopDesc    map[*alloc]string
	destructive map[*alloc]bool // stopped to be replaced by a placement
	inPlace     []*alloc
	blocked     map[string]int
	updates     map[string]*api.DesiredUpdates
}

type placement struct {
	group    string
	name     string
	replaces *alloc
}

// computePlan diffs the job against its allocations. Allocations of an older
// version that are still running are replaced when the change is destructive
// (Meta, group or task changes, facts 4.5) and updated in place otherwise
// (Priority, 87). Finished allocations of older versions are left as they
// are and do not count, so a changed batch job runs again (more/ 608-612).
// The plan endpoint counts the stopped allocations as ignored (82), an
// evaluation's annotations do not (lifecycle events 4134: Ignore 1 with
// two stopped allocations).
func (s *Server) computePlan(job *api.Job, allocs []*alloc, countStopped bool) plan {
	p := plan{
		stopDesc:    make(map[*alloc]string),
		destructive: make(map[*alloc]bool),
		blocked:     make(map[string]int),
		updates:     make(map[string]*api.DesiredUpdates),
	}
	upd := func(g string) *api.DesiredUpdates {
		u, ok := p.updates[g]
		if !ok {
			u = &api.DesiredUpdates{}
			p.updates[g] = u
		}
		return u
	}
	groups := make(map[string]*api.TaskGroup)
	for _, tg := range job.TaskGroups {
		groups[deref(tg.Name)] = tg
		upd(deref(tg.Name))
	}
	stopped := deref(job.Stop)
	version := deref(job.Version)
	for _, tg := range job.TaskGroups {
		g := deref(tg.Name)
		count := deref(tg.Count)
		if stopped {
			count = 0
		}
		var keep []*alloc
		usedNames := make(map[string]bool)
		for _, a := range allocs {
			if a.a.TaskGroup != g {
				continue
			}
			if a.a.DesiredStatus != desiredRun {
				if countStopped {
					upd(g).Ignore++
				}
				continue
			}
			switch {
			case a.jobVersion == version:
				keep = append(keep, a)
			case clientTerminal(a):
				upd(g).Ignore++
			case destructiveChange(a.job, job):
				if len(keep) < count {
					p.stop = append(p.stop, a)
					p.stopDesc[a] = descJobUpdate
					p.destructive[a] = true
					p.place = append(p.place, placement{group: g, name: a.a.Name, replaces: a})
					usedNames[a.a.Name] = true
					upd(g).DestructiveUpdate++
					count--
				} else {
					keep = append(keep, a)
				}
			default:
				p.inPlace = append(p.inPlace, a)
				keep = append(keep, a)
			}
		}
		for i, a := range keep {
			if i >= count {
				p.stop = append(p.stop, a)
				p.stopDesc[a] = descNotNeeded
				upd(g).Stop++
				continue
			}
			usedNames[a.a.Name] = true
			if slices.Contains(p.inPlace, a) {
				upd(g).InPlaceUpdate++
			} else {
				upd(g).Ignore++
			}
		}
		missing := count - len(keep)
		if !driversHealthy(tg, s.drivers) {
			if missing > 0 {
				p.blocked[g] = missing
			}
			continue
		}
		for i := 0; missing > 0; i++ {
			name := fmt.Sprintf("%s.%s[%d]", deref(job.ID), g, i)
			if usedNames[name] {
				continue
			}
			usedNames[name] = true
			p.place = append(p.place, placement{group: g, name: name})
			upd(g).Place++
			missing--
		}
	}
	for _, a := range allocs {
		if _, ok := groups[a.a.TaskGroup]; !ok && a.a.DesiredStatus == desiredRun {
			p.stop = append(p.stop, a)
			p.stopDesc[a] = descNotNeeded
			upd(a.a.TaskGroup).Stop++
		}
	}
	p.inPlace = slices.DeleteFunc(p.inPlace, func(a *alloc) bool { _, stop := p.stopDesc[a]; return stop })
	return p
}

func (p plan) empty() bool {
	return len(p.place) == 0 && len(p.stop) == 0 && len(p.inPlace) == 0
}

func driversHealthy(tg *api.TaskGroup, drivers map[string]bool) bool {
	for _, t := range tg.Tasks {
		if !drivers[t.Driver] {
			return false
		}
	}
	return true
}

// destructiveChange reports whether moving an alloc from job version a to b
// needs a new allocation: any change to the groups or to the job Meta, which
// tasks see as NOMAD_META_* (facts 4.5).
func destructiveChange(a, b *api.Job) bool {
	if a == nil || b == nil {
		return true
	}
	if !bytes.Equal(mustJSON(a.Meta), mustJSON(b.Meta)) {
		return true
	}
	return !bytes.Equal(groupsSpec(a), groupsSpec(b))
}

func groupsSpec(j *api.Job) []byte {
	groups := make([]*api.TaskGroup, 0, len(j.TaskGroups))
	for _, tg := range j.TaskGroups {
		c := *tg
		c.Count = nil
		groups = append(groups, &c)
	}
	return mustJSON(groups)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return b
}

// scheduleEval hands an evaluation to the scheduler, which plans it after
// Options.EvalDelay as the agent's asynchronous workers do, or within the
// request when the delay is negative.
func (s *Server) scheduleEval(je *jobEntry, ee *evalEntry) {
	key := jobKey(je.job)
	s.after(s.opts.EvalDelay, func() {
		if s.jobs[key] != je || s.evals[ee.e.ID] != ee || ee.e.Status != evalPending {
			return
		}
		s.processEval(je, ee, 0)
	})
}

// processEval runs the scheduler for an evaluation: a PlanResult write when
// the plan changes anything (an identical re-register has none, 40 @51-52), a
// blocked evaluation when a driver is missing (fact 68), then the write that
// completes the evaluation. snapshot is the index the scheduler read the
// state at, zero for the current one.
func (s *Server) processEval(je *jobEntry, ee *evalEntry, snapshot uint64) {
	if snapshot == 0 {
		snapshot = s.index
	}
	job := je.job
	p := s.computePlan(job, je.allocs, false)
	now := s.now()
	idx := s.index + 1
	dep, created, cancelled := s.planDeployments(idx, je, p, now)
	var started, stopping, inPlace []*alloc
	if !p.empty() || created || len(cancelled) > 0 {
		s.nextIndex()
		s.setEvalStatus(idx, ee, evalPending)
		evs := []event{s.evalEvent(idx, ee, "PlanResult")}
		if created {
			evs = append(evs, s.deploymentEvent(idx, dep, "PlanResult"))
		}
		for _, d := range cancelled {
			evs = append(evs, s.deploymentEvent(idx, d, "PlanResult"))
		}
		if created || len(cancelled) > 0 {
			s.touch(idx, "deployment")
		}
		ts := now.UnixNano()
		var written []*alloc
		newByOld := make(map[*alloc]*alloc)
		for _, pl := range p.place {
			a := s.newAlloc(idx, je, ee, pl.group, pl.name)
			joinDeployment(dep, a)
			if pl.replaces != nil {
				newByOld[pl.replaces] = a
				a.a.PreviousAllocation = pl.replaces.a.ID
			}
			started = append(started, a)
			written = append(written, a)
		}
		for _, a := range p.stop {
			a.a.DesiredStatus = desiredStop
			a.a.DesiredDescription = p.stopDesc[a]
			if n := newByOld[a]; n != nil {
				a.a.NextAllocation = n.a.ID
			}
			a.a.ModifyIndex, a.a.AllocModifyIndex, a.a.ModifyTime = idx, idx, ts
			if !clientTerminal(a) {
				stopping = append(stopping, a)
			}
			written = append(written, a)
		}
		for _, a := range p.inPlace {
			a.jobVersion = deref(job.Version)
			a.job = job
			a.a.ModifyIndex, a.a.AllocModifyIndex, a.a.ModifyTime = idx, idx, ts
			if dep != nil {
				joinDeployment(dep, a)
				inPlace = append(inPlace, a)
			}
			written = append(written, a)
		}
		written = append(written, s.bumpPrevious(idx, written)...)
		for _, a := range written {
			evs = append(evs, s.allocEvent(idx, a, "PlanResult"))
		}
		s.touch(idx, "allocs")
		s.watch.fire(allocsKeyWatch(jobKey(job)))
		s.refreshSummary(idx, je)
		evs = append(evs, s.updateJobStatus(idx, je, "PlanResult")...)
		s.publish(idx, evs...)
	}
	ee.e.PlanAnnotations = &api.PlanAnnotations{DesiredTGUpdates: p.updates}
	queued := make(map[string]int)
	for _, tg := range job.TaskGroups {
		queued[deref(tg.Name)] = p.blocked[deref(tg.Name)]
	}
	ee.e.QueuedAllocations = queued
	ee.e.SnapshotIndex = snapshot
	if ee.e.DeploymentID == "" {
		if d := je.latestDeployment(); d != nil {
			ee.e.DeploymentID = d.ID
		}
	}
	if len(p.blocked) > 0 {
		idx := s.nextIndex()
		be := s.newEval(idx, je, "queued-allocs", evalBlocked)
		be.e.PreviousEval = ee.e.ID
		// As Nomad's CreateBlockedEval: the job version is the
		// evaluation's it blocks for.
		be.e.JobModifyIndex = ee.e.JobModifyIndex
		be.e.FailedTGAllocs = make(map[string]*api.AllocationMetric)
		je.queued = make(map[string]int)
		for g, n := range p.blocked {
			je.queued[g] = n
			be.e.FailedTGAllocs[g] = &api.AllocationMetric{
				NodesEvaluated:     1,
				NodesAvailable:     map[string]int{"dc1": 1},
				ConstraintFiltered: map[string]int{"missing drivers": 1},
				NodesFiltered:      1,
			}
		}
		ee.e.BlockedEval = be.e.ID
		s.refreshSummary(idx, je)
		evs := []event{s.evalEvent(idx, be, "EvaluationUpdated")}
		evs = append(evs, s.updateJobStatus(idx, je, "EvaluationUpdated")...)
		s.publish(idx, evs...)
	} else if len(je.queued) > 0 && deref(job.Stop) {
		je.queued = nil
	}
	idx = s.nextIndex()
	s.setEvalStatus(idx, ee, evalComplete)
	evs := []event{s.evalEvent(idx, ee, "EvaluationUpdated")}
	if deref(job.Stop) {
		s.cancelBlocked(idx, je)
	}
	evs = append(evs, s.updateJobStatus(idx, je, "EvaluationUpdated")...)
	s.publish(idx, evs...)

	for _, a := range inPlace {
		if a.a.ClientStatus == clientRunning {
			s.watchHealth(a)
		}
	}
	s.scheduleClient(started, stopping)
}

// bumpPrevious is the agent's state store writing, with every alloc of a
// plan that has a PreviousAllocation, that previous alloc again: only its
// ModifyIndex moves, and it shows up in the plan's events (lifecycle
// events 4126 and 4138: the alloc before the stopped one).
func (s *Server) bumpPrevious(idx uint64, written []*alloc) []*alloc {
	var out []*alloc
	for _, a := range written {
		prev := s.allocs[a.a.PreviousAllocation]
		if prev == nil || slices.Contains(written, prev) || slices.Contains(out, prev) {
			continue
		}
		prev.a.ModifyIndex = idx
		out = append(out, prev)
	}
	return out
}

// cancelBlocked cancels blocked evaluations of a stopped job so it can end
// dead.
func (s *Server) cancelBlocked(idx uint64, je *jobEntry) {
	for _, e := range je.evals {
		if e.e.Status == evalBlocked {
			s.setEvalStatus(idx, e, "canceled")
		}
	}
	if len(je.queued) > 0 {
		je.queued = nil
		s.refreshSummary(idx, je)
	}
}

func (s *Server) newAlloc(idx uint64, je *jobEntry, ee *evalEntry, group, name string) *alloc {
	now := s.now().UnixNano()
	a := &alloc{
		a: &api.Allocation{
			ID:               newUUID(),
			Namespace:        deref(je.job.Namespace),
			EvalID:           ee.e.ID,
			Name:             name,
			NodeID:           s.nodeID,
			NodeName:         nodeName,
			JobID:            deref(je.job.ID),
			TaskGroup:        group,
			DesiredStatus:    desiredRun,
			ClientStatus:     clientPending,
			CreateIndex:      idx,
			ModifyIndex:      idx,
			AllocModifyIndex: idx,
			CreateTime:       now,
			ModifyTime:       now,
		},
		jobVersion: deref(je.job.Version),
		job:        je.job,
	}
	if tg := s.group(a); tg != nil {
		s.placeResources(a, tg)
	}
	je.allocs = append(je.allocs, a)
	s.allocs[a.a.ID] = a
	return a
}

// rescheduleDelay applies the group's reschedule policy: batch defaults to
// one attempt per 24h after 5s, service to unlimited attempts from 30s
// doubling up to 1h (facts 4.1, 4.11).
func (s *Server) rescheduleDelay(a *alloc) (time.Duration, bool) {
	tg := s.group(a)
	if tg == nil || tg.ReschedulePolicy == nil {
		return 0, false
	}
	p := tg.ReschedulePolicy
	var prior int
	now := s.now().UnixNano()
	if a.a.RescheduleTracker != nil {
		for _, e := range a.a.RescheduleTracker.Events {
			if deref(p.Unlimited) || now-e.RescheduleTime < int64(deref(p.Interval)) {
				prior++
			}
		}
	}
	if !deref(p.Unlimited) && prior >= deref(p.Attempts) {
		return 0, false
	}
	delay := deref(p.Delay)
	if fn := deref(p.DelayFunction); fn == "exponential" || fn == "fibonacci" {
		for range prior {
			delay *= 2
		}
		if m := deref(p.MaxDelay); m > 0 && delay > m {
			delay = m
		}
	}
	return delay, true
}

// reschedule places the replacement of a failed alloc when its
// alloc-reschedule evaluation comes due.
func (s *Server) reschedule(re *evalEntry, old *alloc) {
	je := s.jobOf(old)
	if je == nil || s.evals[re.e.ID] != re {
		return
	}
	idx := s.nextIndex()
	if s.allocs[old.a.ID] != old || old.a.DesiredStatus != desiredRun || old.a.NextAllocation != "" || deref(je.job.Stop) {
		s.setEvalStatus(idx, re, evalComplete)
		evs := []event{s.evalEvent(idx, re, "EvaluationUpdated")}
		evs = append(evs, s.updateJobStatus(idx, je, "EvaluationUpdated")...)
		s.publish(idx, evs...)
		return
	}
	s.setEvalStatus(idx, re, evalPending)
	n := s.newAlloc(idx, je, re, old.a.TaskGroup, old.a.Name)
	n.a.PreviousAllocation = old.a.ID
	tracker := &api.RescheduleTracker{}
	if old.a.RescheduleTracker != nil {
		tracker.Events = append(tracker.Events, old.a.RescheduleTracker.Events...)
	}
	tracker.Events = append(tracker.Events, &api.RescheduleEvent{
		RescheduleTime: s.now().UnixNano(),
		PrevAllocID:    old.a.ID,
		PrevNodeID:     old.a.NodeID,
	})
	n.a.RescheduleTracker = tracker
	joinDeployment(je.activeDeployment(), n)
	old.a.DesiredStatus = desiredStop
	old.a.NextAllocation = n.a.ID
	old.a.ModifyIndex, old.a.AllocModifyIndex = idx, idx
	s.touch(idx, "allocs")
	s.watch.fire(allocsKeyWatch(jobKey(je.job)))
	s.refreshSummary(idx, je)
	evs := []event{s.evalEvent(idx, re, "PlanResult")}
	written := []*alloc{n, old}
	for _, a := range append(written, s.bumpPrevious(idx, written)...) {
		evs = append(evs, s.allocEvent(idx, a, "PlanResult"))
	}
	evs = append(evs, s.updateJobStatus(idx, je, "PlanResult")...)
	s.publish(idx, evs...)

	idx = s.nextIndex()
	s.setEvalStatus(idx, re, evalComplete)
	s.publish(idx, s.evalEvent(idx, re, "EvaluationUpdated"))
	s.scheduleClient([]*alloc{n}, nil)
}
