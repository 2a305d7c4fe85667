package nomadtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// multiError renders errors the way hashicorp/go-multierror does, which is
// what Nomad's validation errors look like on the wire (66, 70, 71).
type multiError []error

func (m multiError) Error() string {
	if len(m) == 1 {
		return fmt.Sprintf("1 error occurred:\n\t* %s\n\n", m[0])
	}
	points := make([]string, len(m))
	for i, err := range m {
		points[i] = "* " + err.Error()
	}
	return fmt.Sprintf("%d errors occurred:\n\t%s\n\n", len(m), strings.Join(points, "\n\t"))
}

// canonicalize fills in the defaults the server adds to a registered job
// (facts 4.1, file 30). The api package's own Canonicalize sets most of them;
// the rest differ on the server.
func canonicalize(job *api.Job, ns string) {
	job.Namespace = ptr(ns)
	job.Canonicalize()
	if len(job.Datacenters) == 0 {
		job.Datacenters = []string{"*"}
	}
	if job.NodePool == nil || *job.NodePool == "" {
		job.NodePool = ptr("default")
	}
	if job.Name == nil || *job.Name == "" {
		job.Name = ptr(*job.ID)
	}
	// The groups have merged the job's update strategy; the job keeps only
	// its stagger and max_parallel, as the agent's conversion to its own
	// struct does (lifecycle events: job Update {Stagger 30s, MaxParallel 1}
	// and zeros).
	u := job.Update
	if u == nil {
		u = &api.UpdateStrategy{}
	}
	job.Update = &api.UpdateStrategy{
		Stagger: ptr(deref(u.Stagger)), MaxParallel: ptr(deref(u.MaxParallel)),
		HealthCheck: ptr(""), MinHealthyTime: ptr(time.Duration(0)), HealthyDeadline: ptr(time.Duration(0)),
		ProgressDeadline: ptr(time.Duration(0)), AutoRevert: ptr(false), AutoPromote: ptr(false), Canary: ptr(0),
	}
	for _, tg := range job.TaskGroups {
		for _, t := range tg.Tasks {
			if t.KillTimeout == nil || *t.KillTimeout == 0 {
				t.KillTimeout = ptr(5 * time.Second)
			}
		}
	}
}

// validateJob returns the errors real Nomad reports from job validation, in
// its order. Driver configuration is not checked: the server accepts it and
// the task fails on the client instead (63, 64).
func validateJob(job *api.Job) multiError {
	var errs multiError
	id := deref(job.ID)
	switch {
	case id == "":
		errs = append(errs, fmt.Errorf("Missing job ID"))
	case strings.Contains(id, " "):
		errs = append(errs, fmt.Errorf("Job ID contains a space"))
	case strings.Contains(id, "\x00"):
		errs = append(errs, fmt.Errorf("Job ID contains a null character"))
	}
	switch t := deref(job.Type); t {
	case "service", "batch", "system", "sysbatch":
	default:
		errs = append(errs, fmt.Errorf("Invalid job type: %q", t))
	}
	if p := deref(job.Priority); p < 1 || p > 100 {
		errs = append(errs, fmt.Errorf("Job priority must be between [1, 100]"))
	}
	if len(job.TaskGroups) == 0 {
		errs = append(errs, fmt.Errorf("Missing job task groups"))
	}
	seen := make(map[string]bool)
	for i, tg := range job.TaskGroups {
		name := deref(tg.Name)
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("Job task group %d missing name", i+1))
			continue
		case seen[name]:
			errs = append(errs, fmt.Errorf("Job task group %d redefines '%s' from group %d", i+1, name, i))
			continue
		}
		seen[name] = true
		if tgErrs := validateGroup(tg); len(tgErrs) > 0 {
			errs = append(errs, fmt.Errorf("Task group %s validation failed: %w", name, tgErrs))
		}
	}
	return errs
}

func validateGroup(tg *api.TaskGroup) multiError {
	var errs multiError
	if c := deref(tg.Count); c < 0 {
		errs = append(errs, fmt.Errorf("Task group count can't be negative"))
	}
	if len(tg.Tasks) == 0 {
		errs = append(errs, fmt.Errorf("Missing tasks for task group"))
	}
	for i, t := range tg.Tasks {
		var terrs multiError
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("Task %d missing name", i+1))
			continue
		}
		if t.Driver == "" {
			terrs = append(terrs, fmt.Errorf("Missing task driver"))
		}
		if len(terrs) > 0 {
			errs = append(errs, fmt.Errorf("Task %s validation failed: %w", t.Name, terrs))
		}
	}
	return errs
}

// cloneJob deep-copies a job through JSON, the same path it takes over the
// wire.
func cloneJob(j *api.Job) *api.Job {
	b, err := json.Marshal(j)
	if err != nil {
		panic(fmt.Sprintf("marshal job: %v", err))
	}
	var out api.Job
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("unmarshal job: %v", err))
	}
	return &out
}

// specBytes is the part of a job a re-register compares: everything but the
// fields the server maintains. Stop is part of the spec, which is why
// registering a stopped job again starts it with Version+1 (more/ 625).
func specBytes(j *api.Job) []byte {
	c := cloneJob(j)
	c.Status, c.StatusDescription = nil, nil
	c.CreateIndex, c.ModifyIndex, c.JobModifyIndex = nil, nil, nil
	c.SubmitTime, c.Version, c.Stable = nil, nil, nil
	b, _ := json.Marshal(c)
	return b
}
