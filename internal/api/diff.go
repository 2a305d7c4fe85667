package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// DiffResponse is the body of POST /v1/diff.
type DiffResponse struct {
	// Revision is the store revision the diff was computed against; pass
	// it as expectedRevision to apply exactly what was shown.
	Revision uint64 `json:"revision"`
	// Changed reports whether applying would write anything.
	Changed bool `json:"changed"`
	// Planned reports whether Nomad was asked for a plan; PlanNote says
	// why not when it was not.
	Planned  bool         `json:"planned"`
	PlanNote string       `json:"planNote,omitempty"`
	Objects  []ObjectDiff `json:"objects"`
}

// ObjectDiff is what applying would do to one sandbox.
type ObjectDiff struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Kind is "pool" for a pool, empty for a sandbox.
	Kind string `json:"kind,omitempty"`
	// Action is create, update, unchanged or prune; or, for a sandbox
	// apply would create or update but the controller could not run,
	// conflict (its Nomad job ID is taken by a job this controller does
	// not own) or missing_namespace (Nomad has no such namespace).
	Action string `json:"action"`
	// Message says, for conflict and missing_namespace, what stands in
	// the way and what to do.
	Message string `json:"message,omitempty"`
	// Changes lists the fields that would change, leaf by leaf, with paths
	// such as "spec.ports[0].to", "spec.env.LOG_LEVEL" or
	// `labels["app.kubernetes.io/name"]`. Empty for unchanged and prune.
	Changes []FieldChange `json:"changes"`
	// Plan is Nomad's answer for the sandbox's job; PlanError is set
	// instead when Nomad could not plan. Neither is set for prune,
	// conflict and missing_namespace.
	Plan      *PlanSummary `json:"plan,omitempty"`
	PlanError string       `json:"planError,omitempty"`
}

// FieldChange is one changed leaf. Old is absent for an added field, New
// for a removed one.
type FieldChange struct {
	Path string `json:"path"`
	Op   string `json:"op"` // add, remove or replace
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// PlanSummary is the part of Nomad's job plan that says what would happen.
type PlanSummary struct {
	// DiffType is Nomad's verdict on the job: Added, Edited, Deleted or None.
	DiffType         string                    `json:"diffType"`
	DesiredTGUpdates map[string]DesiredUpdates `json:"desiredTGUpdates"`
	Warnings         string                    `json:"warnings"`
	// FailedTGAllocs names the task groups Nomad could not place.
	FailedTGAllocs []string `json:"failedTGAllocs"`
}

// DesiredUpdates counts what Nomad's scheduler would do to one task group.
type DesiredUpdates struct {
	Ignore            uint64 `json:"ignore"`
	Place             uint64 `json:"place"`
	Migrate           uint64 `json:"migrate"`
	Stop              uint64 `json:"stop"`
	InPlaceUpdate     uint64 `json:"inPlaceUpdate"`
	DestructiveUpdate uint64 `json:"destructiveUpdate"`
	Canary            uint64 `json:"canary"`
	Preemptions       uint64 `json:"preemptions"`
}

// Diff actions, named as `kubectl diff` and `nomad job plan` speak.
var diffActions = map[store.Action]string{
	store.ActionCreated:    "create",
	store.ActionConfigured: "update",
	store.ActionUnchanged:  "unchanged",
	store.ActionPruned:     "prune",
}

// Actions of a sandbox apply would store but the controller could not
// run, by what stands in the way.
var obstacleActions = map[string]string{
	nomad.ObstacleForeignJob:       "conflict",
	nomad.ObstacleOtherOwner:       "conflict",
	nomad.ObstacleNamespaceMissing: "missing_namespace",
}

func (s *Server) diff(w http.ResponseWriter, r *http.Request) error {
	var req ApplyRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	objs, opts, err := s.prepare(&req)
	if err != nil {
		return err
	}
	res, err := s.dryRun(r.Context(), objs, opts)
	if err != nil {
		return err
	}
	out := DiffResponse{Revision: res.Revision, Changed: res.Changed(), Planned: s.opts.Planner != nil,
		Objects: make([]ObjectDiff, 0, len(res.Objects))}
	if out.Changed {
		out.Revision--
	}
	if !out.Planned {
		out.PlanNote = "This controller has no Nomad planner configured, so Nomad's plan was skipped."
	}
	for i, o := range res.Objects {
		ns, name := splitKey(o.Key)
		d := ObjectDiff{Namespace: ns, Name: name, Kind: kindOf(o.Pool), Action: diffActions[o.Action], Changes: []FieldChange{}}
		if d.Action == "" {
			d.Action = string(o.Action)
		}
		if o.Action == store.ActionPruned {
			out.Objects = append(out.Objects, d)
			continue
		}
		// Results list the batch's objects first, in batch order.
		sb := &objs[i].Sandbox
		switch o.Action {
		case store.ActionCreated:
			d.Changes = changesBetween(nil, sb, objs[i].Pool, opts.ApplySet)
		case store.ActionConfigured:
			rec, err := s.opts.Store.Get(r.Context(), o.Key)
			if err != nil {
				return fmt.Errorf("read sandbox %q for diff: %w", o.Key, err)
			}
			d.Changes = changesBetween(&rec, sb, objs[i].Pool, opts.ApplySet)
		}
		// Unchanged sandboxes are not planned: one plan per sandbox of a
		// large folder would load the Nomad servers for nothing, and drift
		// in Nomad is the reconciler's to repair, not a change to review.
		// An unchanged sandbox that cannot run says so in its status.
		// A pool has no job of its own: its sandboxes are planned when
		// they are made.
		if s.opts.Planner != nil && o.Action != store.ActionUnchanged && objs[i].Pool == nil {
			if err := s.planObject(r.Context(), sb, &d); err != nil {
				return err
			}
		}
		out.Objects = append(out.Objects, d)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// planObject adds to d what Nomad would do with sb: what the controller
// would meet there, which replaces the action and the plan (a job it
// would not touch, a namespace that refuses every job), or else Nomad's
// plan. Only the request's own end is an error; Nomad's failures are
// reported in d.
func (s *Server) planObject(ctx context.Context, sb *spec.Sandbox, d *ObjectDiff) error {
	ob, err := s.opts.Planner.Preflight(ctx, sb)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.PlanError = err.Error()
		return nil
	}
	if action, ok := obstacleActions[ob.Reason]; ok {
		d.Action, d.Message = action, ob.Message
		return nil
	}
	resp, err := s.opts.Planner.Plan(ctx, sb)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.PlanError = err.Error()
		return nil
	}
	d.Plan = planSummary(resp)
	return nil
}

func planSummary(resp *nomadapi.JobPlanResponse) *PlanSummary {
	ps := &PlanSummary{DesiredTGUpdates: map[string]DesiredUpdates{}, FailedTGAllocs: []string{}}
	if resp == nil {
		return ps
	}
	ps.Warnings = resp.Warnings
	if resp.Diff != nil {
		ps.DiffType = resp.Diff.Type
	}
	if resp.Annotations != nil {
		for tg, u := range resp.Annotations.DesiredTGUpdates {
			if u == nil {
				continue
			}
			ps.DesiredTGUpdates[tg] = DesiredUpdates{
				Ignore: u.Ignore, Place: u.Place, Migrate: u.Migrate, Stop: u.Stop,
				InPlaceUpdate: u.InPlaceUpdate, DestructiveUpdate: u.DestructiveUpdate,
				Canary: u.Canary, Preemptions: u.Preemptions,
			}
		}
	}
	for tg := range resp.FailedTGAllocs {
		ps.FailedTGAllocs = append(ps.FailedTGAllocs, tg)
	}
	slices.Sort(ps.FailedTGAllocs)
	return ps
}

// diffDoc is what the diff compares: the parts of a sandbox an apply
// writes, as generic JSON.
type diffDoc struct {
	Labels              map[string]string  `json:"labels,omitempty"`
	ApplySet            string             `json:"applySet,omitempty"`
	DeletionRequestedAt *time.Time         `json:"deletionRequestedAt,omitempty"`
	Spec                spec.Spec          `json:"spec"`
	Pool                *spec.PoolSettings `json:"pool,omitempty"`
}

// changesBetween lists the leaf changes from the stored record (nil when
// there is none) to the sandbox as it would be applied.
func changesBetween(old *store.Record, sb *spec.Sandbox, pool *spec.PoolSettings, applySet string) []FieldChange {
	out := []FieldChange{}
	var oldDoc any = absent{}
	if old != nil {
		oldDoc = genericJSON(diffDoc{Labels: old.Sandbox.Labels, ApplySet: old.ApplySet,
			DeletionRequestedAt: old.DeletionRequestedAt, Spec: old.Sandbox.Spec, Pool: old.Pool})
	}
	newDoc := genericJSON(diffDoc{Labels: sb.Labels, ApplySet: applySet, Spec: sb.Spec, Pool: pool})
	diffValues("", oldDoc, newDoc, &out)
	return out
}

// absent stands for a value one side of a diff does not have.
type absent struct{}

// genericJSON turns v into maps, slices and leaves, keeping numbers exact.
func genericJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		// The diff documents are plain data; Marshal cannot fail on them.
		panic(fmt.Sprintf("encode diff document: %v", err))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		panic(fmt.Sprintf("decode diff document: %v", err))
	}
	return out
}

// diffValues appends the changes from old to new under path. Empty objects
// and arrays count as absent: an empty label set is no labels.
func diffValues(path string, old, new any, out *[]FieldChange) {
	old, new = emptyAsAbsent(old), emptyAsAbsent(new)
	om, oldIsMap := old.(map[string]any)
	nm, newIsMap := new.(map[string]any)
	oa, oldIsArr := old.([]any)
	na, newIsArr := new.([]any)
	_, oldAbsent := old.(absent)
	_, newAbsent := new.(absent)
	switch {
	case oldAbsent && newAbsent:
	case (oldIsMap || oldAbsent) && (newIsMap || newAbsent):
		keys := make([]string, 0, len(om)+len(nm))
		for k := range om {
			keys = append(keys, k)
		}
		for k := range nm {
			if _, ok := om[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			diffValues(joinKey(path, k), member(om, k), member(nm, k), out)
		}
	case (oldIsArr || oldAbsent) && (newIsArr || newAbsent):
		for i := range max(len(oa), len(na)) {
			diffValues(path+"["+strconv.Itoa(i)+"]", element(oa, i), element(na, i), out)
		}
	case oldAbsent:
		*out = append(*out, FieldChange{Path: path, Op: "add", New: new})
	case newAbsent:
		*out = append(*out, FieldChange{Path: path, Op: "remove", Old: old})
	case !leafEqual(old, new):
		*out = append(*out, FieldChange{Path: path, Op: "replace", Old: old, New: new})
	}
}

func emptyAsAbsent(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if len(t) == 0 {
			return absent{}
		}
	case []any:
		if len(t) == 0 {
			return absent{}
		}
	}
	return v
}

func member(m map[string]any, k string) any {
	if v, ok := m[k]; ok {
		return v
	}
	return absent{}
}

func element(a []any, i int) any {
	if i < len(a) {
		return a[i]
	}
	return absent{}
}

// leafEqual compares two JSON values; containers of different kinds (a
// map against a string) are never equal.
func leafEqual(a, b any) bool {
	switch a.(type) {
	case map[string]any, []any:
		return false
	}
	switch b.(type) {
	case map[string]any, []any:
		return false
	}
	return a == b
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// joinKey appends an object member to a path: ".key" for identifiers,
// `["key"]` for anything else (label keys hold dots and slashes).
func joinKey(path, k string) string {
	if plainKey.MatchString(k) {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	return path + "[" + strconv.Quote(k) + "]"
}
