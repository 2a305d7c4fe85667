package nomadtest

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Deployments, as the recorded agent makes them (lifecycle README section
// 3). A service job whose group has an update strategy with max_parallel
// above 0 (Nomad fills in max_parallel 1 when the job has no update block)
// gets a deployment in the plan that starts a version of it. The client
// reports each allocation healthy once it has run for its group's
// min_healthy_time; the deployment watcher then creates an evaluation, and
// marks the deployment successful and the job version stable. Marking it
// stable moves the job's ModifyIndex, never its JobModifyIndex or Version.
// With max_parallel 0 there is no deployment at all, though the client
// still reports health.

const (
	deploymentRunning    = "running"
	deploymentSuccessful = "successful"
	deploymentFailed     = "failed"
	deploymentCancelled  = "cancelled"

	descDeploymentRunning    = "Deployment is running"
	descDeploymentSuccessful = "Deployment completed successfully"
	descDeploymentUnhealthy  = "Failed due to unhealthy allocations"
	descDeploymentNewerJob   = "Cancelled due to newer version of job"
	descDeploymentStoppedJob = "Cancelled because job is stopped"

	triggerDeploymentWatcher = "deployment-watcher"
)

// deploymentState is one group's progress, with the keys the agent sends
// (api.DeploymentState lacks AutoPromote).
type deploymentState struct {
	AutoRevert        bool
	AutoPromote       bool
	ProgressDeadline  time.Duration
	RequireProgressBy time.Time
	Promoted          bool
	PlacedCanaries    []string
	DesiredCanaries   int
	DesiredTotal      int
	PlacedAllocs      int
	HealthyAllocs     int
	UnhealthyAllocs   int
}

// deployment is stored in the agent's wire form (api.Deployment lacks
// EvalPriority).
type deployment struct {
	ID                 string
	Namespace          string
	JobID              string
	JobVersion         uint64
	JobModifyIndex     uint64
	JobSpecModifyIndex uint64
	JobCreateIndex     uint64
	IsMultiregion      bool
	TaskGroups         map[string]*deploymentState
	Status             string
	StatusDescription  string
	EvalPriority       int
	CreateIndex        uint64
	ModifyIndex        uint64
	CreateTime         int64
	ModifyTime         int64
}

func (d *deployment) active() bool { return d.Status == deploymentRunning }

// outcome is where the watcher takes a running deployment: failed once an
// allocation is unhealthy, successful once every group has all its
// allocations healthy, nowhere yet otherwise.
func (d *deployment) outcome() (status, desc string) {
	done := true
	for _, st := range d.TaskGroups {
		if st.UnhealthyAllocs > 0 {
			return deploymentFailed, descDeploymentUnhealthy
		}
		if st.HealthyAllocs < st.DesiredTotal {
			done = false
		}
	}
	if done {
		return deploymentSuccessful, descDeploymentSuccessful
	}
	return "", ""
}

func (d *deployment) touch(idx uint64, now time.Time) {
	d.ModifyIndex = idx
	d.ModifyTime = now.UnixNano()
}

// latestDeployment is the job's newest deployment, nil when it has none.
func (je *jobEntry) latestDeployment() *deployment {
	if len(je.deployments) == 0 {
		return nil
	}
	return je.deployments[len(je.deployments)-1]
}

// activeDeployment is the running deployment of the job's current version.
func (je *jobEntry) activeDeployment() *deployment {
	d := je.latestDeployment()
	if d == nil || !d.active() || d.JobVersion != deref(je.job.Version) {
		return nil
	}
	return d
}

// wantsDeployment reports whether a group is deployed with a deployment:
// a service job's group whose update strategy has max_parallel above 0.
func wantsDeployment(job *api.Job, tg *api.TaskGroup) bool {
	return deref(job.Type) == "service" && !deref(job.Stop) && tg.Update != nil &&
		deref(tg.Update.MaxParallel) > 0 && deref(tg.Count) > 0
}

// planDeployments applies Nomad's reconciler to a plan: it cancels the
// job's running deployments of other versions (every one once the job is
// stopped), and returns the deployment the plan's placements and in-place
// updates join: the running one of the current version, or a new one when
// the plan starts that version (no allocation of it yet) or changes
// allocations to it.
func (s *Server) planDeployments(idx uint64, je *jobEntry, p plan, now time.Time) (dep *deployment, created bool, cancelled []*deployment) {
	job := je.job
	for _, d := range je.deployments {
		if !d.active() {
			continue
		}
		switch {
		case deref(job.Stop):
			d.StatusDescription = descDeploymentStoppedJob
		case d.JobVersion != deref(job.Version):
			d.StatusDescription = descDeploymentNewerJob
		default:
			continue
		}
		d.Status = deploymentCancelled
		d.touch(idx, now)
		cancelled = append(cancelled, d)
	}
	dep = je.activeDeployment()
	if dep != nil {
		return dep, false, cancelled
	}
	version := deref(job.Version)
	for _, tg := range job.TaskGroups {
		g := deref(tg.Name)
		if !wantsDeployment(job, tg) {
			continue
		}
		placing := slices.ContainsFunc(p.place, func(pl placement) bool { return pl.group == g })
		replacing := slices.ContainsFunc(p.place, func(pl placement) bool { return pl.group == g && pl.replaces != nil })
		updating := slices.ContainsFunc(p.inPlace, func(a *alloc) bool { return a.a.TaskGroup == g })
		started := slices.ContainsFunc(je.allocs, func(a *alloc) bool { return a.a.TaskGroup == g && a.jobVersion == version })
		if !placing && !updating || started && !replacing && !updating {
			continue
		}
		if dep == nil {
			dep = &deployment{
				ID:                 newUUID(),
				Namespace:          deref(job.Namespace),
				JobID:              deref(job.ID),
				JobVersion:         version,
				JobModifyIndex:     deref(job.ModifyIndex),
				JobSpecModifyIndex: deref(job.JobModifyIndex),
				JobCreateIndex:     deref(job.CreateIndex),
				TaskGroups:         make(map[string]*deploymentState),
				Status:             deploymentRunning,
				StatusDescription:  descDeploymentRunning,
				EvalPriority:       deref(job.Priority),
				CreateIndex:        idx,
				CreateTime:         now.UnixNano(),
			}
			dep.touch(idx, now)
			created = true
		}
		dep.TaskGroups[g] = &deploymentState{
			AutoRevert:        deref(tg.Update.AutoRevert),
			AutoPromote:       deref(tg.Update.AutoPromote),
			ProgressDeadline:  deref(tg.Update.ProgressDeadline),
			RequireProgressBy: now.Add(deref(tg.Update.ProgressDeadline)).UTC(),
			DesiredCanaries:   deref(tg.Update.Canary),
			DesiredTotal:      deref(tg.Count),
		}
	}
	if created {
		je.deployments = append(je.deployments, dep)
		s.deployments[dep.ID] = dep
	}
	return dep, created, cancelled
}

// joinDeployment makes a placed or in-place updated alloc part of dep.
func joinDeployment(dep *deployment, a *alloc) {
	if dep == nil {
		return
	}
	st := dep.TaskGroups[a.a.TaskGroup]
	if st == nil {
		return
	}
	a.a.DeploymentID = dep.ID
	a.a.DeploymentStatus = nil
	st.PlacedAllocs++
}

// watchHealth starts the min_healthy_time clock of an alloc that runs and
// was never reported healthy: the client reports health for every group
// with an update strategy, deployment or not (maxparallel0 4183). A task
// that restarts starts the clock again when it runs.
func (s *Server) watchHealth(a *alloc) {
	tg := s.group(a)
	if tg == nil || tg.Update == nil || deref(tg.Update.HealthCheck) == "manual" || a.a.DeploymentStatus != nil {
		return
	}
	s.stopTimer(a.health)
	a.health = s.after(s.delay(deref(tg.Update.MinHealthyTime)+healthReportDelay), func() {
		a.health = nil
		if s.allocs[a.a.ID] != a || a.a.DesiredStatus != desiredRun || a.a.ClientStatus != clientRunning || a.a.DeploymentStatus != nil {
			return
		}
		b := s.newClientBatch()
		s.setHealth(b, a, true)
		b.commit()
	})
}

// setHealth records the client's health report of a in the client write b:
// the alloc's DeploymentStatus, and its deployment's count, which the
// watcher then acts on (default.events 4110).
func (s *Server) setHealth(b *clientBatch, a *alloc, healthy bool) {
	s.stopTimer(a.health)
	a.health = nil
	now := s.now()
	idx := b.touch(a)
	a.a.DeploymentStatus = &api.AllocDeploymentStatus{Healthy: ptr(healthy), Timestamp: now.UTC(), ModifyIndex: idx}
	d := s.deployments[a.a.DeploymentID]
	if d == nil || !d.active() {
		return
	}
	st := d.TaskGroups[a.a.TaskGroup]
	if st == nil {
		return
	}
	if healthy {
		st.HealthyAllocs++
		st.RequireProgressBy = now.Add(st.ProgressDeadline).UTC()
	} else {
		st.UnhealthyAllocs++
	}
	d.touch(idx, now)
	b.deployment(d)
	if status, _ := d.outcome(); status != "" {
		b.after = append(b.after, func() { s.watchDeployment(d) })
	}
}

// watchDeployment is the deployment watcher acting on a decided
// deployment: its evaluation first, then the deployment's new status with
// the job version marked stable, then the evaluation completed (default
// events 4111-4113).
func (s *Server) watchDeployment(d *deployment) {
	s.after(s.delay(watcherEvalDelay), func() {
		je := s.jobs[nsKey{d.Namespace, d.JobID}]
		if je == nil || s.deployments[d.ID] != d || !d.active() {
			return
		}
		idx := s.nextIndex()
		ee := s.newEval(idx, je, triggerDeploymentWatcher, evalPending)
		ee.e.DeploymentID = d.ID
		s.publish(idx, s.evalEvent(idx, ee, "AllocationUpdateDesiredStatus"))
		s.after(s.delay(watcherPlanDelay), func() {
			if s.jobs[nsKey{d.Namespace, d.JobID}] != je || s.evals[ee.e.ID] != ee {
				return
			}
			// A deployment cancelled meanwhile leaves the evaluation
			// nothing to do but complete.
			status, desc := d.outcome()
			if !d.active() || status == "" {
				s.processEval(je, ee, ee.e.CreateIndex)
				return
			}
			idx := s.nextIndex()
			d.Status, d.StatusDescription = status, desc
			d.touch(idx, s.now())
			s.touch(idx, "deployment")
			evs := []event{s.deploymentEvent(idx, d, "PlanResult")}
			if status == deploymentSuccessful {
				evs = append(evs, s.markStable(idx, je, d.JobVersion)...)
			}
			ee.e.ModifyIndex = idx
			s.touch(idx, "evals")
			evs = append(evs, s.evalEvent(idx, ee, "PlanResult"))
			s.publish(idx, evs...)
			s.processEval(je, ee, ee.e.CreateIndex)
		})
	})
}

// markStable marks a job version stable as the agent's state store does:
// the version and, when it is the current one, the job itself, whose
// ModifyIndex moves while its JobModifyIndex and Version stay.
func (s *Server) markStable(idx uint64, je *jobEntry, version uint64) []event {
	for _, v := range je.versions {
		if deref(v.Version) != version || deref(v.Stable) {
			continue
		}
		v.Stable = ptr(true)
		if v != je.job {
			return nil
		}
		je.job.ModifyIndex = ptr(idx)
		s.jobChanged(idx, je)
		return []event{s.jobEvent(idx, je.job, "PlanResult")}
	}
	return nil
}

// The deployment endpoints answer with the deployment table's index, and
// a job's latest deployment is null when it has none (maxparallel0).

func (s *Server) handleJobDeployment(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		var d *deployment
		if je := s.jobs[key]; je != nil {
			d = je.latestDeployment()
		}
		// A nil *deployment encodes as null.
		return queryResult{index: s.tables["deployment"], body: d}, s.watch.ch("deployment")
	})
}

func (s *Server) handleJobDeployments(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	all := r.URL.Query().Get("all") == "true"
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []*deployment{}
		if je := s.jobs[key]; je != nil {
			for _, d := range je.deployments {
				if all || d.JobCreateIndex == deref(je.job.CreateIndex) {
					out = append(out, d)
				}
			}
		}
		// Newest first, as api.DeploymentIndexSort has it.
		slices.SortFunc(out, func(a, b *deployment) int { return cmp.Compare(b.CreateIndex, a.CreateIndex) })
		return queryResult{index: s.tables["deployment"], body: out}, s.watch.ch("deployment")
	})
}

func (s *Server) handleDeployment(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	// The request's namespace is checked first, as for allocations.
	if !s.allowNs(w, r, requestNamespace(r), capReadJob) {
		return
	}
	id := r.PathValue("id")
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		d := s.deployments[id]
		if d == nil {
			return queryResult{index: s.tables["deployment"], status: http.StatusNotFound, text: "deployment not found"}, s.watch.ch("deployment")
		}
		if !acl.allowNs(d.Namespace, capReadJob) {
			return denied(), s.watch.ch("deployment")
		}
		return queryResult{index: d.ModifyIndex, body: d}, s.watch.ch("deployment")
	})
}

func (s *Server) handleDeployments(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	ns := requestNamespace(r)
	if !s.allowNs(w, r, ns, capReadJob) {
		return
	}
	prefix := r.URL.Query().Get("prefix")
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []*deployment{}
		for _, d := range s.deployments {
			if (ns == "*" || d.Namespace == ns) && strings.HasPrefix(d.ID, prefix) && acl.allowNs(d.Namespace, capReadJob) {
				out = append(out, d)
			}
		}
		slices.SortFunc(out, func(a, b *deployment) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
		return queryResult{index: s.tables["deployment"], body: out}, s.watch.ch("deployment")
	})
}

func (s *Server) handleDeploymentAllocations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	if !s.allowNs(w, r, requestNamespace(r), capReadJob) {
		return
	}
	id := r.PathValue("id")
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []allocListStub{}
		d := s.deployments[id]
		if d != nil && !acl.allowNs(d.Namespace, capReadJob) {
			return denied(), s.watch.ch("allocs")
		}
		if d != nil {
			if je := s.jobs[nsKey{d.Namespace, d.JobID}]; je != nil {
				for _, a := range je.allocs {
					if a.a.DeploymentID == d.ID {
						out = append(out, allocStub(a))
					}
				}
			}
		}
		return queryResult{index: s.tables["allocs"], body: out}, s.watch.ch("allocs")
	})
}
