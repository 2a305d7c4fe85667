package nomadtest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/nomad/api"
)

// registerResponse is the body of PUT /v1/jobs (fact 01). KnownLeader and
// LastContact are always false and 0 on writes.
type registerResponse struct {
	EvalCreateIndex uint64
	EvalID          string
	Index           uint64
	JobModifyIndex  uint64
	KnownLeader     bool
	LastContact     int
	NextToken       string
	Warnings        string
}

// deregisterResponse is the body of DELETE /v1/job/:id (62, 120).
type deregisterResponse struct {
	EvalCreateIndex uint64
	EvalID          string
	Index           uint64
	JobModifyIndex  uint64
	KnownLeader     bool
	LastContact     int
	NextToken       string
	VolumeEvalID    string
	VolumeEvalIndex uint64
}

func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.listJobs(w, r)
	case http.MethodPut, http.MethodPost: // POST behaves as PUT (76)
		s.registerJob(w, r)
	default:
		invalidMethod(w)
	}
}

// decodeJobRequest reads a {"Job": ...} body. Unknown fields are ignored
// (72); decoding errors are 400 with encoding/json's text (65, 75).
func decodeJobRequest(r *http.Request, into any, job func() *api.Job) (string, bool) {
	if err := json.NewDecoder(r.Body).Decode(into); err != nil {
		return err.Error(), false
	}
	if job() == nil {
		return "Job must be specified", false
	}
	return "", true
}

// registerNamespace applies the precedence recorded in more/ 410-417:
// ?namespace=, then the request's top-level Namespace, then Job.Namespace.
func registerNamespace(r *http.Request, top string, job *api.Job) string {
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		return ns
	}
	if top != "" {
		return top
	}
	if ns := deref(job.Namespace); ns != "" {
		return ns
	}
	return "default"
}

func (s *Server) registerJob(w http.ResponseWriter, r *http.Request) {
	var req api.JobRegisterRequest
	if msg, ok := decodeJobRequest(r, &req, func() *api.Job { return req.Job }); !ok {
		writeText(w, http.StatusBadRequest, msg)
		return
	}
	job := req.Job
	canonicalize(job, registerNamespace(r, req.Namespace, job))
	// Validation failures are 500, not 400 (66, 70, 71), and so is a
	// namespace that does not exist, before the ACL check: a token without
	// rights there gets the 500, not a 403 (more/ 361, 365).
	if errs := validateJob(job); len(errs) > 0 {
		writeText(w, http.StatusInternalServerError, errs.Error())
		return
	}
	if text, ok := s.namespaceExists(job); !ok {
		writeText(w, http.StatusInternalServerError, text)
		return
	}
	if !aclOf(r).allowNs(deref(job.Namespace), capSubmitJob) {
		s.deny(w, r)
		return
	}
	resp, status, text := s.register(job, req.EnforceIndex, req.JobModifyIndex)
	if status != http.StatusOK {
		writeText(w, status, text)
		return
	}
	setWriteIndex(w, resp.Index)
	writeJSON(w, http.StatusOK, resp)
}

// register registers a canonical, valid job, as the endpoint does after
// decoding. It returns the response and, on failure, the status and text
// Nomad answers with.
func (s *Server) register(job *api.Job, enforce bool, index uint64) (registerResponse, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if text, ok := s.namespaceExistsLocked(job); !ok {
		return registerResponse{}, http.StatusInternalServerError, text
	}
	key := jobKey(job)
	je := s.jobs[key]
	if enforce {
		// Check-and-set conflicts are 500 with these texts (facts 4.7).
		switch {
		case index == 0 && je != nil:
			return registerResponse{}, http.StatusInternalServerError,
				fmt.Sprintf("Enforcing job modify index %d: job already exists", index)
		case index > 0 && je == nil:
			return registerResponse{}, http.StatusInternalServerError,
				fmt.Sprintf("Enforcing job modify index %d: job does not exist", index)
		case je != nil && index != deref(je.job.JobModifyIndex):
			return registerResponse{}, http.StatusInternalServerError,
				fmt.Sprintf("Enforcing job modify index %d: job exists with conflicting job modify index: %d", index, deref(je.job.JobModifyIndex))
		}
	}
	spec := specBytes(job)
	idx := s.nextIndex()
	resp := registerResponse{Index: idx, EvalCreateIndex: idx}
	trigger := triggerRegister
	if je != nil && bytes.Equal(je.spec, spec) {
		// An identical job is not written, but it still gets an evaluation,
		// and the response's JobModifyIndex is the job's ModifyIndex
		// (facts 4.5, 96).
		ee := s.newEval(idx, je, trigger, evalPending)
		evs := []event{s.evalEvent(idx, ee, "EvaluationUpdated")}
		evs = append(evs, s.updateJobStatus(idx, je, "EvaluationUpdated")...)
		s.publish(idx, evs...)
		resp.EvalID = ee.e.ID
		resp.JobModifyIndex = deref(je.job.ModifyIndex)
		s.scheduleEval(je, ee)
		return resp, http.StatusOK, ""
	}
	job.SubmitTime = ptr(s.now().UnixNano())
	job.JobModifyIndex = ptr(idx)
	job.ModifyIndex = ptr(idx)
	evType := "JobRegistered"
	if je == nil {
		job.Version = ptr(uint64(0))
		job.CreateIndex = ptr(idx)
		job.Status = ptr("pending")
		je = &jobEntry{summary: summaryEntry{CreateIndex: idx}}
		s.jobs[key] = je
	} else {
		job.Version = ptr(deref(je.job.Version) + 1)
		job.CreateIndex = je.job.CreateIndex
		job.Status = je.job.Status
	}
	job.StatusDescription = ptr("")
	job.Stable = ptr(false)
	je.job = job
	je.spec = spec
	je.versions = append(je.versions, job)
	s.jobChanged(idx, je)
	s.refreshSummary(idx, je)
	s.publish(idx, s.jobEvent(idx, job, evType))
	ee := s.newEval(idx, je, trigger, evalPending)
	ee.e.JobModifyIndex = idx
	evs := []event{s.evalEvent(idx, ee, evType)}
	evs = append(evs, s.updateJobStatus(idx, je, evType)...)
	s.publish(idx, evs...)
	resp.EvalID = ee.e.ID
	resp.JobModifyIndex = idx
	s.scheduleEval(je, ee)
	return resp, http.StatusOK, ""
}

// namespaceExists returns the error text of a register into a namespace
// that does not exist (more/ 414), or ok.
func (s *Server) namespaceExists(job *api.Job) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.namespaceExistsLocked(job)
}

func (s *Server) namespaceExistsLocked(job *api.Job) (string, bool) {
	ns := deref(job.Namespace)
	if _, ok := s.namespaces[ns]; !ok {
		return multiError{fmt.Errorf("job %q is in nonexistent namespace %q", deref(job.ID), ns)}.Error(), false
	}
	return "", true
}

// allowNs answers 403 and returns false unless the caller has op in ns.
func (s *Server) allowNs(w http.ResponseWriter, r *http.Request, ns, op string) bool {
	if aclOf(r).allowNs(ns, op) {
		return true
	}
	s.deny(w, r)
	return false
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	key := nsKey{requestNamespace(r), r.PathValue("id")}
	switch r.Method {
	case http.MethodGet:
		if !s.allowNs(w, r, key.ns, capReadJob) {
			return
		}
		// The index of a single job is its own ModifyIndex (30); a missing
		// job answers 404 with the jobs table index (60, 124).
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			ch := s.watch.ch(jobKeyWatch(key))
			je := s.jobs[key]
			if je == nil {
				return queryResult{index: s.tables["jobs"], status: http.StatusNotFound, text: "job not found"}, ch
			}
			return queryResult{index: deref(je.job.ModifyIndex), body: je.job}, ch
		})
	case http.MethodDelete:
		// Stop and purge need submit-job (more/ 362, 363).
		if !s.allowNs(w, r, key.ns, capSubmitJob) {
			return
		}
		resp := s.deregister(key, r.URL.Query().Get("purge") == "true")
		setWriteIndex(w, resp.Index)
		writeJSON(w, http.StatusOK, resp)
	case http.MethodPut, http.MethodPost:
		// Nomad registers through /v1/job/:id too.
		s.registerJob(w, r)
	default:
		invalidMethod(w)
	}
}

// deregister stops a job, or purges it. An unknown job is a 200 no-op with
// index 0 (62, more/ 445).
func (s *Server) deregister(key nsKey, purge bool) deregisterResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	je := s.jobs[key]
	if je == nil {
		return deregisterResponse{}
	}
	idx := s.nextIndex()
	resp := deregisterResponse{Index: idx, EvalCreateIndex: idx, JobModifyIndex: idx}
	if purge {
		// The job and its allocations leave the state at once, and the
		// stream carries only the deregistration with the job as it was
		// (facts 4.8).
		delete(s.jobs, key)
		for _, a := range je.allocs {
			s.stopTimer(a.health)
			delete(s.allocs, a.a.ID)
			s.removeAllocDirLocked(a.a.ID)
		}
		for _, d := range je.deployments {
			delete(s.deployments, d.ID)
		}
		s.publish(idx, s.jobEvent(idx, je.job, "JobDeregistered"))
		ee := s.newEval(idx, je, triggerDeregister, evalPending)
		s.publish(idx, s.evalEvent(idx, ee, "JobDeregistered"))
		for _, e := range je.evals {
			if e != ee {
				delete(s.evals, e.e.ID)
			}
		}
		s.touch(idx, "jobs")
		s.touch(idx, "job_summary")
		s.touch(idx, "allocs")
		s.watch.fire(jobKeyWatch(key))
		s.watch.fire(allocsKeyWatch(key))
		// The scheduler finds nothing left to plan for (default.events
		// 4152).
		s.after(s.opts.EvalDelay, func() {
			idx2 := s.nextIndex()
			ee.e.PlanAnnotations = &api.PlanAnnotations{DesiredTGUpdates: map[string]*api.DesiredUpdates{}}
			ee.e.SnapshotIndex = idx
			s.setEvalStatus(idx2, ee, evalComplete)
			s.publish(idx2, s.evalEvent(idx2, ee, "EvaluationUpdated"))
			delete(s.evals, ee.e.ID)
		})
		resp.EvalID = ee.e.ID
		return resp
	}
	// A stop is a new version with Stop set (facts 4.8).
	job := cloneJob(je.job)
	job.Stop = ptr(true)
	job.Version = ptr(deref(job.Version) + 1)
	job.ModifyIndex = ptr(idx)
	job.JobModifyIndex = ptr(idx)
	job.SubmitTime = ptr(s.now().UnixNano())
	je.job = job
	je.spec = specBytes(job)
	je.versions = append(je.versions, job)
	s.jobChanged(idx, je)
	s.publish(idx, s.jobEvent(idx, job, "JobDeregistered"))
	ee := s.newEval(idx, je, triggerDeregister, evalPending)
	ee.e.JobModifyIndex = idx
	evs := []event{s.evalEvent(idx, ee, "JobDeregistered")}
	evs = append(evs, s.updateJobStatus(idx, je, "JobDeregistered")...)
	s.publish(idx, evs...)
	resp.EvalID = ee.e.ID
	s.scheduleEval(je, ee)
	return resp
}

func (s *Server) handleJobAllocations(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	// The index is the whole allocs table, but only this job's changes wake
	// the query (31, 54). An unknown job is 200 [] (61).
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		ch := s.watch.ch(allocsKeyWatch(key))
		out := []allocListStub{}
		if je := s.jobs[key]; je != nil {
			for _, a := range je.allocs {
				out = append(out, allocStub(a))
			}
		}
		// The state store's job index yields allocations in ID order
		// (81.allocs).
		slices.SortFunc(out, func(a, b allocListStub) int { return strings.Compare(a.ID, b.ID) })
		return queryResult{index: s.tables["allocs"], body: out}, ch
	})
}

// allocListStub adds DesiredTransition, which the agent sends and
// api.AllocationListStub lacks (31).
type allocListStub struct {
	api.AllocationListStub
	DesiredTransition api.DesiredTransition
}

func allocStub(a *alloc) allocListStub {
	x := a.a
	return allocListStub{DesiredTransition: x.DesiredTransition, AllocationListStub: api.AllocationListStub{
		ID:                 x.ID,
		EvalID:             x.EvalID,
		Name:               x.Name,
		Namespace:          x.Namespace,
		NodeID:             x.NodeID,
		NodeName:           x.NodeName,
		JobID:              x.JobID,
		JobType:            deref(a.job.Type),
		JobVersion:         a.jobVersion,
		TaskGroup:          x.TaskGroup,
		DesiredStatus:      x.DesiredStatus,
		DesiredDescription: x.DesiredDescription,
		ClientStatus:       x.ClientStatus,
		ClientDescription:  x.ClientDescription,
		TaskStates:         x.TaskStates,
		DeploymentStatus:   x.DeploymentStatus,
		FollowupEvalID:     x.FollowupEvalID,
		NextAllocation:     x.NextAllocation,
		RescheduleTracker:  x.RescheduleTracker,
		CreateIndex:        x.CreateIndex,
		ModifyIndex:        x.ModifyIndex,
		CreateTime:         x.CreateTime,
		ModifyTime:         x.ModifyTime,
	}}
}

// allocFull is GET /v1/allocation/:id: the allocation with its Job and
// JobVersion (130).
type allocFull struct {
	allocWire
	JobVersion uint64
}

func (s *Server) handleAllocation(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	id := r.PathValue("id")
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		ch := s.watch.ch("allocs")
		a := s.allocs[id]
		if a == nil {
			return queryResult{index: s.tables["allocs"], status: http.StatusNotFound, text: "alloc not found"}, ch
		}
		// The allocation's namespace is known only once it is found, so a
		// missing one is a 404 for anyone (more/ 316).
		if !acl.allowNs(a.a.Namespace, capReadJob) {
			return denied(), ch
		}
		c := *a.a
		c.Job = a.job
		// Zero-valued fields are left out, JobVersion 0 included (130).
		return queryResult{index: a.a.ModifyIndex, body: omitZero(mustJSON(allocFull{allocWire: s.allocWire(a, &c), JobVersion: a.jobVersion}))}, ch
	})
}

// handleAllocations answers GET /v1/allocations as the agent's paginator
// does: allocations in create order, (CreateIndex, ID), across namespaces
// for namespace=* (447); a go-bexpr filter evaluated against the full
// allocation, with the same 400s as the job list; pages cut after
// filtering, the next token "<CreateIndex>.<ID>" of the first allocation
// of the next page; and task_states=false leaving out TaskStates.
func (s *Server) handleAllocations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	q := r.URL.Query()
	ns := requestNamespace(r)
	var eval *bexpr.Evaluator
	if f := q.Get("filter"); f != "" {
		ev, err := bexpr.CreateEvaluator(f)
		if err != nil {
			writeText(w, http.StatusBadRequest, "failed to create result paginator: failed to read filter expression: "+err.Error())
			return
		}
		eval = ev
	}
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	token := q.Get("next_token")
	withTaskStates := q.Get("task_states") != "false"
	if !s.allowNs(w, r, ns, capReadJob) {
		return
	}
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		res := queryResult{index: s.tables["allocs"]}
		var all []*alloc
		for _, a := range s.allocs {
			if ns == "*" || a.a.Namespace == ns {
				all = append(all, a)
			}
		}
		slices.SortFunc(all, func(a, b *alloc) int {
			return cmp.Or(cmp.Compare(a.a.CreateIndex, b.a.CreateIndex), strings.Compare(a.a.ID, b.a.ID))
		})
		out := []allocListStub{}
		for _, a := range all {
			if token != "" && beforeAllocToken(a.a, token) {
				continue
			}
			if eval != nil {
				ok, err := eval.Evaluate(a.a)
				if err != nil {
					return queryResult{index: res.index, bare: true, status: http.StatusBadRequest,
						text: "failed to read result page: " + err.Error()}, s.watch.ch("allocs")
				}
				if !ok {
					continue
				}
			}
			if !acl.allowNs(a.a.Namespace, capReadJob) {
				continue
			}
			if perPage > 0 && len(out) == perPage {
				res.nextToken = fmt.Sprintf("%d.%s", a.a.CreateIndex, a.a.ID)
				break
			}
			st := allocStub(a)
			if !withTaskStates {
				st.TaskStates = nil
			}
			out = append(out, st)
		}
		res.body = out
		return res, s.watch.ch("allocs")
	})
}

// beforeAllocToken reports whether a comes before the allocation a next
// token "<CreateIndex>.<ID>" names: the index compared as a number, the ID
// as text, and a token that does not parse compared whole as text, as the
// agent's tokenizer does.
func beforeAllocToken(a *api.Allocation, token string) bool {
	idx, id, ok := strings.Cut(token, ".")
	n, err := strconv.ParseUint(idx, 10, 64)
	if !ok || err != nil {
		return fmt.Sprintf("%d.%s", a.CreateIndex, a.ID) < token
	}
	return cmp.Or(cmp.Compare(a.CreateIndex, n), strings.Compare(a.ID, id)) < 0
}

func (s *Server) handleJobSummary(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		ch := s.watch.ch("jobs")
		je := s.jobs[key]
		if je == nil {
			return queryResult{index: s.tables["job_summary"], status: http.StatusNotFound, text: "job not found"}, ch
		}
		sum := je.apiSummary()
		return queryResult{index: sum.ModifyIndex, body: sum}, ch
	})
}

func (je *jobEntry) apiSummary() *api.JobSummary {
	return &api.JobSummary{
		JobID:       deref(je.job.ID),
		Namespace:   deref(je.job.Namespace),
		Summary:     je.summary.counts,
		Children:    &api.JobChildrenSummary{},
		CreateIndex: je.summary.CreateIndex,
		ModifyIndex: je.summary.ModifyIndex,
	}
}

func (s *Server) handleJobVersions(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		ch := s.watch.ch(jobKeyWatch(key))
		je := s.jobs[key]
		if je == nil {
			return queryResult{index: s.tables["jobs"], status: http.StatusNotFound, text: "job versions not found"}, ch
		}
		// Newest first (more/ 506).
		vs := slices.Clone(je.versions)
		slices.Reverse(vs)
		idx := deref(je.job.ModifyIndex)
		// The body repeats the query meta, as recorded (more/ 506).
		return queryResult{index: idx, body: map[string]any{
			"Versions": vs, "Diffs": nil, "Index": idx, "KnownLeader": true, "LastContact": 0, "NextToken": "",
		}}, ch
	})
}

func (s *Server) handleJobEvaluations(w http.ResponseWriter, r *http.Request) {
	key, ok := s.jobRead(w, r)
	if !ok {
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []*api.Evaluation{}
		if je := s.jobs[key]; je != nil {
			for _, e := range je.evals {
				out = append(out, e.e)
			}
		}
		// Sorted by ID, not by time (more/ 505).
		slices.SortFunc(out, func(a, b *api.Evaluation) int { return strings.Compare(a.ID, b.ID) })
		return queryResult{index: s.tables["evals"], body: out}, s.watch.ch("evals")
	})
}

func (s *Server) handleEvaluation(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	id := r.PathValue("id")
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		e := s.evals[id]
		if e == nil {
			return queryResult{index: s.tables["evals"], status: http.StatusNotFound, text: "eval not found"}, s.watch.ch("evals")
		}
		if !acl.allowNs(e.e.Namespace, capReadJob) {
			return denied(), s.watch.ch("evals")
		}
		return queryResult{index: e.e.ModifyIndex, body: e.e}, s.watch.ch("evals")
	})
}

func (s *Server) handleEvaluations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	ns := requestNamespace(r)
	if !s.allowNs(w, r, ns, capReadJob) {
		return
	}
	acl := aclOf(r)
	var eval *bexpr.Evaluator
	if f := r.URL.Query().Get("filter"); f != "" {
		ev, err := bexpr.CreateEvaluator(f)
		if err != nil {
			writeText(w, http.StatusBadRequest, "failed to create result paginator: failed to read filter expression: "+err.Error())
			return
		}
		eval = ev
	}
	// In CreateIndex order, with the filter over the full evaluation
	// (more/ 513).
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []*api.Evaluation{}
		for _, je := range s.sortedJobs(ns) {
			if !acl.allowNs(deref(je.job.Namespace), capReadJob) {
				continue
			}
			for _, e := range je.evals {
				if eval != nil {
					ok, err := eval.Evaluate(e.e)
					if err != nil {
						return queryResult{bare: true, status: http.StatusBadRequest, text: "failed to read result page: " + err.Error()}, s.watch.ch("evals")
					}
					if !ok {
						continue
					}
				}
				out = append(out, e.e)
			}
		}
		slices.SortFunc(out, func(a, b *api.Evaluation) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
		return queryResult{index: s.tables["evals"], body: out}, s.watch.ch("evals")
	})
}

// validateResponse is the body of PUT /v1/validate/job (73, 74). It always
// claims the driver config was validated although it is not.
type validateResponse struct {
	DriverConfigValidated bool
	Error                 string
	ValidationErrors      []string
	Warnings              string
}

func (s *Server) handleValidateJob(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		invalidMethod(w)
		return
	}
	var req api.JobValidateRequest
	if msg, ok := decodeJobRequest(r, &req, func() *api.Job { return req.Job }); !ok {
		writeText(w, http.StatusBadRequest, msg)
		return
	}
	canonicalize(req.Job, registerNamespace(r, req.Namespace, req.Job))
	if !s.allowNs(w, r, deref(req.Job.Namespace), capReadJob) {
		return
	}
	resp := validateResponse{DriverConfigValidated: true}
	if errs := validateJob(req.Job); len(errs) > 0 {
		resp.Error = errs.Error()
		for _, e := range errs {
			resp.ValidationErrors = append(resp.ValidationErrors, e.Error())
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// jobRead starts a read of one job's data: GET only, the job's key from
// the path and namespace, and read-job in that namespace.
func (s *Server) jobRead(w http.ResponseWriter, r *http.Request) (nsKey, bool) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return nsKey{}, false
	}
	key := nsKey{requestNamespace(r), r.PathValue("id")}
	return key, s.allowNs(w, r, key.ns, capReadJob)
}
