package nomadtest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/nomad/api"
)

// planResponse is the wire form of POST /v1/job/:id/plan (82-87).
// NextPeriodicLaunch is null, which api.JobPlanResponse cannot express.
type planResponse struct {
	Annotations        *api.PlanAnnotations
	CreatedEvals       []*api.Evaluation
	Diff               *api.JobDiff
	FailedTGAllocs     map[string]*api.AllocationMetric
	Index              uint64
	JobModifyIndex     uint64
	NextPeriodicLaunch *time.Time
	Warnings           string
}

// handleJobPlan dry-runs the scheduler. It writes nothing and creates no
// evaluation (more/ 517). JobModifyIndex is the current job's, the value to
// check-and-set with, and 0 for a new job (facts 4.6).
func (s *Server) handleJobPlan(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		invalidMethod(w)
		return
	}
	var req api.JobPlanRequest
	if msg, ok := decodeJobRequest(r, &req, func() *api.Job { return req.Job }); !ok {
		writeText(w, http.StatusBadRequest, msg)
		return
	}
	job := req.Job
	canonicalize(job, registerNamespace(r, req.Namespace, job))
	if errs := validateJob(job); len(errs) > 0 {
		writeText(w, http.StatusInternalServerError, errs.Error())
		return
	}
	// Plan needs submit-job, like register (more/ 317).
	if !s.allowNs(w, r, deref(job.Namespace), capSubmitJob) {
		return
	}
	resp := s.planJob(job, req.Diff)
	setWriteIndex(w, resp.Index)
	writeJSON(w, http.StatusOK, resp)
}

// planJob is the plan endpoint for a canonical job.
func (s *Server) planJob(job *api.Job, diff bool) planResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	je := s.jobs[jobKey(job)]
	var old *api.Job
	var allocs []*alloc
	var jmi uint64
	hyp := cloneJob(job)
	hyp.Version = ptr(uint64(0))
	if je != nil {
		old, allocs, jmi = je.job, je.allocs, deref(je.job.JobModifyIndex)
		hyp.Version = je.job.Version
		if !bytes.Equal(je.spec, specBytes(job)) {
			hyp.Version = ptr(deref(je.job.Version) + 1)
		}
	}
	p := s.computePlan(hyp, allocs, true)
	resp := planResponse{
		Annotations:    &api.PlanAnnotations{DesiredTGUpdates: p.updates},
		Index:          jmi,
		JobModifyIndex: jmi,
	}
	if len(p.blocked) > 0 {
		resp.FailedTGAllocs = make(map[string]*api.AllocationMetric)
		for g := range p.blocked {
			resp.FailedTGAllocs[g] = &api.AllocationMetric{NodesEvaluated: 1, NodesFiltered: 1, ConstraintFiltered: map[string]int{"missing drivers": 1}}
		}
	}
	if diff {
		resp.Diff = jobDiff(old, job, p.updates)
	}
	return resp
}

// flatJob is the job's diffable scalar fields, named as in Nomad's diffs.
func flatJob(j *api.Job) map[string]string {
	if j == nil {
		return nil
	}
	m := map[string]string{
		"AllAtOnce":  fmt.Sprint(deref(j.AllAtOnce)),
		"Dispatched": fmt.Sprint(j.Dispatched),
		"Name":       deref(j.Name),
		"Namespace":  deref(j.Namespace),
		"NodePool":   deref(j.NodePool),
		"Priority":   fmt.Sprint(deref(j.Priority)),
		"Region":     deref(j.Region),
		"Stop":       fmt.Sprint(deref(j.Stop)),
		"Type":       deref(j.Type),
	}
	for k, v := range j.Meta {
		m["Meta["+k+"]"] = v
	}
	return m
}

func flatGroup(tg *api.TaskGroup) map[string]string {
	if tg == nil {
		return nil
	}
	m := map[string]string{"Count": fmt.Sprint(deref(tg.Count))}
	for k, v := range tg.Meta {
		m["Meta["+k+"]"] = v
	}
	return m
}

func flatTask(t *api.Task) map[string]string {
	if t == nil {
		return nil
	}
	m := map[string]string{
		"Driver":      t.Driver,
		"KillTimeout": fmt.Sprint(int64(deref(t.KillTimeout))),
		"User":        t.User,
	}
	for k, v := range t.Meta {
		m["Meta["+k+"]"] = v
	}
	for k, v := range t.Env {
		m["Env["+k+"]"] = v
	}
	return m
}

func flatten(prefix string, v any, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, e, out)
		}
	case []any:
		for i, e := range x {
			flatten(fmt.Sprintf("%s[%d]", prefix, i), e, out)
		}
	default:
		out[prefix] = fmt.Sprint(x)
	}
}

// fieldDiffs compares two flat maps. With contextual set, unchanged fields
// are listed with Type None, as Nomad does inside an edited object (83).
func fieldDiffs(old, new map[string]string, contextual bool) []*api.FieldDiff {
	names := make(map[string]bool)
	for k := range old {
		names[k] = true
	}
	for k := range new {
		names[k] = true
	}
	var out []*api.FieldDiff
	for _, k := range sortedKeys(names) {
		o, inOld := old[k]
		n, inNew := new[k]
		d := &api.FieldDiff{Name: k, Old: o, New: n}
		switch {
		case inOld && !inNew:
			d.Type = "Deleted"
		case !inOld && inNew:
			d.Type = "Added"
		case o != n:
			d.Type = "Edited"
		case contextual:
			d.Type = "None"
		default:
			continue
		}
		out = append(out, d)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func diffType(old, new bool, changed bool) string {
	switch {
	case !old && new:
		return "Added"
	case old && !new:
		return "Deleted"
	case changed:
		return "Edited"
	}
	return "None"
}

// jobDiff renders the plan diff: Type None for an identical job, Added for
// a new one, Edited otherwise, with per-group update counts (82-87).
func jobDiff(old, new *api.Job, updates map[string]*api.DesiredUpdates) *api.JobDiff {
	d := &api.JobDiff{ID: deref(new.ID)}
	d.Fields = fieldDiffs(flatJob(old), flatJob(new), false)
	var oldDC []string
	if old != nil {
		oldDC = old.Datacenters
	}
	if od := setDiff("Datacenters", oldDC, new.Datacenters); od != nil {
		d.Objects = append(d.Objects, od)
	}
	groups := make(map[string][2]*api.TaskGroup)
	if old != nil {
		for _, tg := range old.TaskGroups {
			groups[deref(tg.Name)] = [2]*api.TaskGroup{tg, nil}
		}
	}
	for _, tg := range new.TaskGroups {
		p := groups[deref(tg.Name)]
		p[1] = tg
		groups[deref(tg.Name)] = p
	}
	changed := len(d.Fields) > 0 || len(d.Objects) > 0
	for _, name := range sortedKeys(groups) {
		p := groups[name]
		gd := groupDiff(name, p[0], p[1], updates[name])
		if gd.Type != "None" {
			changed = true
		}
		d.TaskGroups = append(d.TaskGroups, gd)
	}
	d.Type = diffType(old != nil, true, changed)
	return d
}

func setDiff(name string, old, new []string) *api.ObjectDiff {
	o, n := slices.Clone(old), slices.Clone(new)
	slices.Sort(o)
	slices.Sort(n)
	if slices.Equal(o, n) {
		return nil
	}
	od := &api.ObjectDiff{Name: name, Type: diffType(len(o) > 0, len(n) > 0, true)}
	for _, v := range n {
		if !slices.Contains(o, v) {
			od.Fields = append(od.Fields, &api.FieldDiff{Name: name, New: v, Type: "Added"})
		}
	}
	for _, v := range o {
		if !slices.Contains(n, v) {
			od.Fields = append(od.Fields, &api.FieldDiff{Name: name, Old: v, Type: "Deleted"})
		}
	}
	return od
}

func groupDiff(name string, old, new *api.TaskGroup, u *api.DesiredUpdates) *api.TaskGroupDiff {
	gd := &api.TaskGroupDiff{Name: name}
	gd.Fields = fieldDiffs(flatGroup(old), flatGroup(new), false)
	if old == nil {
		for _, f := range gd.Fields {
			if f.Name == "Count" {
				f.Annotations = []string{"forces create"}
			}
		}
	}
	tasks := make(map[string][2]*api.Task)
	if old != nil {
		for _, t := range old.Tasks {
			tasks[t.Name] = [2]*api.Task{t, nil}
		}
	}
	if new != nil {
		for _, t := range new.Tasks {
			p := tasks[t.Name]
			p[1] = t
			tasks[t.Name] = p
		}
	}
	changed := len(gd.Fields) > 0
	for _, tn := range sortedKeys(tasks) {
		p := tasks[tn]
		td := taskDiff(tn, p[0], p[1])
		if td.Type != "None" {
			changed = true
		}
		gd.Tasks = append(gd.Tasks, td)
	}
	gd.Type = diffType(old != nil, new != nil, changed)
	if u != nil {
		gd.Updates = make(map[string]uint64)
		for k, v := range map[string]uint64{
			"ignore":                u.Ignore,
			"create":                u.Place,
			"destroy":               u.Stop,
			"in-place update":       u.InPlaceUpdate,
			"create/destroy update": u.DestructiveUpdate,
		} {
			if v > 0 {
				gd.Updates[k] = v
			}
		}
	}
	return gd
}

func taskDiff(name string, old, new *api.Task) *api.TaskDiff {
	td := &api.TaskDiff{Name: name}
	td.Fields = fieldDiffs(flatTask(old), flatTask(new), false)
	oc, nc := map[string]string{}, map[string]string{}
	if old != nil {
		flatten("", old.Config, oc)
	}
	if new != nil {
		flatten("", new.Config, nc)
	}
	cfg := fieldDiffs(oc, nc, true)
	cfgChanged := slices.ContainsFunc(cfg, func(f *api.FieldDiff) bool { return f.Type != "None" })
	if cfgChanged {
		td.Objects = append(td.Objects, &api.ObjectDiff{Name: "Config", Type: diffType(old != nil, new != nil, true), Fields: cfg})
	}
	if old != nil && new != nil {
		or, nr := mustJSON(old.Resources), mustJSON(new.Resources)
		if !bytes.Equal(or, nr) {
			td.Objects = append(td.Objects, &api.ObjectDiff{Name: "Resources", Type: "Edited", Fields: fieldDiffs(
				map[string]string{"CPU": fmt.Sprint(deref(old.Resources.CPU)), "MemoryMB": fmt.Sprint(deref(old.Resources.MemoryMB))},
				map[string]string{"CPU": fmt.Sprint(deref(new.Resources.CPU)), "MemoryMB": fmt.Sprint(deref(new.Resources.MemoryMB))}, false)})
		}
	}
	td.Type = diffType(old != nil, new != nil, len(td.Fields) > 0 || len(td.Objects) > 0)
	switch td.Type {
	case "Added":
		td.Annotations = []string{"forces create"}
	case "Deleted":
		td.Annotations = []string{"forces destroy"}
	case "Edited":
		td.Annotations = []string{"forces create/destroy update"}
	}
	return td
}
