package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// ApplyRequest is the body of POST /v1/apply and POST /v1/diff.
type ApplyRequest struct {
	Objects []ApplyObject `json:"objects"`
	// DryRun computes the results without writing. Diff always dry-runs.
	DryRun bool `json:"dryRun"`
	// ApplySet is recorded on every object and scopes Prune.
	ApplySet string `json:"applySet"`
	// Prune marks for deletion the sandboxes of ApplySet and/or matching
	// PruneSelector that Objects does not hold. It needs at least one of
	// the two.
	Prune         bool   `json:"prune"`
	PruneSelector string `json:"pruneSelector"`
	// ExpectedRevision, when not zero, must be the store's revision.
	ExpectedRevision uint64 `json:"expectedRevision"`
}

// MaxApplySetLength bounds an apply set's name (a DNS subdomain's length),
// which every record of the set carries.
const MaxApplySetLength = 253

// ApplyObject is one sandbox of an apply. Source travels beside Sandbox
// because it is not part of the sandbox's canonical JSON.
type ApplyObject struct {
	Sandbox spec.Sandbox `json:"sandbox"`
	Source  spec.Source  `json:"source"`
	// ExpectedResourceVersion, when not zero, must be the stored record's
	// resource version.
	ExpectedResourceVersion uint64 `json:"expectedResourceVersion"`
	// Pool, when set, makes the object a pool: Sandbox holds its
	// namespace, name, labels and, as the spec, its template.
	Pool *spec.PoolSettings `json:"pool,omitempty"`
}

// ApplyResponse is the body of a successful POST /v1/apply.
type ApplyResponse struct {
	// Revision is the store revision after the apply (the one it would
	// take, in a dry run that changes something).
	Revision uint64 `json:"revision"`
	DryRun   bool   `json:"dryRun"`
	// Changed reports whether anything was (or would be) written.
	Changed bool           `json:"changed"`
	Results []ObjectResult `json:"results"`
}

// ObjectResult is what an apply did to one sandbox: the request's objects
// in order, then the pruned sandboxes sorted by key.
type ObjectResult struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Kind is "pool" for a pool, empty for a sandbox.
	Kind            string `json:"kind,omitempty"`
	Action          string `json:"action"` // created, configured, unchanged or pruned
	Generation      uint64 `json:"generation"`
	ResourceVersion uint64 `json:"resourceVersion"`
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) error {
	var req ApplyRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	objs, opts, err := s.prepare(&req)
	if err != nil {
		return err
	}
	opts.DryRun = req.DryRun
	res, err := s.opts.Store.Apply(r.Context(), objs, opts)
	if err != nil {
		return err
	}
	out := ApplyResponse{Revision: res.Revision, DryRun: req.DryRun, Changed: res.Changed(),
		Results: make([]ObjectResult, 0, len(res.Objects))}
	for _, o := range res.Objects {
		ns, name := splitKey(o.Key)
		out.Results = append(out.Results, ObjectResult{Namespace: ns, Name: name, Kind: kindOf(o.Pool), Action: string(o.Action),
			Generation: o.Generation, ResourceVersion: o.ResourceVersion})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// prepare checks an apply or diff request and turns it into the store's
// terms: every object canonicalised and validated (400 listing every
// problem of every object), then checked against the policy (422).
func (s *Server) prepare(req *ApplyRequest) ([]store.Object, store.ApplyOptions, error) {
	opts := store.ApplyOptions{ApplySet: req.ApplySet, Prune: req.Prune, ExpectedRevision: req.ExpectedRevision}
	sel, err := parseSelector("pruneSelector", req.PruneSelector)
	if err != nil {
		return nil, opts, err
	}
	opts.PruneSelector = sel
	switch {
	case len(req.Objects) == 0 && !req.Prune:
		return nil, opts, errorf(http.StatusBadRequest, CodeInvalid,
			"The request holds no objects; send at least one, or set prune to delete the sandboxes of an apply set.")
	case req.Prune && req.ApplySet == "" && sel.Empty():
		return nil, opts, errorf(http.StatusBadRequest, CodeInvalid,
			"Prune needs an applySet or a pruneSelector; without either it would delete every sandbox.")
	case !req.Prune && req.PruneSelector != "":
		return nil, opts, errorf(http.StatusBadRequest, CodeInvalid, "pruneSelector is only used with prune; set prune or drop it.")
	case len(req.ApplySet) > MaxApplySetLength:
		return nil, opts, errorf(http.StatusBadRequest, CodeInvalid,
			"applySet has %d characters; at most %d are allowed.", len(req.ApplySet), MaxApplySetLength)
	}

	objs := make([]store.Object, len(req.Objects))
	var invalid []any
	seen := make(map[string]int, len(req.Objects))
	for i := range req.Objects {
		o := &req.Objects[i]
		sb := o.Sandbox
		sb.Source = o.Source
		if sb.Namespace == "" {
			sb.Namespace = s.defaultNamespace()
		}
		sb.Canonicalize()
		var problems []string
		var pool *spec.PoolSettings
		if o.Pool != nil {
			st := *o.Pool
			st.Canonicalize()
			pool = &st
		}
		validate := sb.Validate
		if pool != nil {
			validate = func() error { return spec.ValidatePool(&sb, *pool) }
		}
		if err := validate(); err != nil {
			var ve *spec.ValidationError
			if errors.As(err, &ve) {
				problems = ve.Problems
			} else {
				problems = []string{err.Error()}
			}
		}
		if first, dup := seen[sb.Key()]; dup {
			problems = append(problems, fmt.Sprintf("the sandbox is also objects[%d]; each sandbox may appear once per request", first))
		} else {
			seen[sb.Key()] = i
		}
		if len(problems) > 0 {
			invalid = append(invalid, objectProblems(i, &sb, problems))
		}
		objs[i] = store.Object{Sandbox: sb, ExpectedResourceVersion: o.ExpectedResourceVersion, Pool: pool}
	}
	if len(invalid) > 0 {
		return nil, opts, errorf(http.StatusBadRequest, CodeInvalid,
			"%d of the %d objects are invalid; no object was applied.", len(invalid), len(objs)).with(invalid...)
	}

	if s.opts.Policy != nil {
		var refused []any
		for i := range objs {
			if err := s.opts.Policy.CheckPolicy(&objs[i].Sandbox); err != nil {
				refused = append(refused, objectProblems(i, &objs[i].Sandbox, []string{err.Error()}))
			}
		}
		if len(refused) > 0 {
			return nil, opts, errorf(http.StatusUnprocessableEntity, CodeRefused,
				"This controller's policy refuses %d of the %d objects; no object was applied.", len(refused), len(objs)).
				with(refused...)
		}
	}
	return objs, opts, nil
}

func objectProblems(i int, sb *spec.Sandbox, problems []string) ObjectProblems {
	p := ObjectProblems{Namespace: sb.Namespace, Name: sb.Name, Index: i, Problems: problems}
	if sb.Source.File != "" {
		p.Source = fmt.Sprintf("%s:%d", sb.Source.File, sb.Source.StartLine)
	}
	return p
}

// dryRun runs the request's apply without writing.
func (s *Server) dryRun(ctx context.Context, objs []store.Object, opts store.ApplyOptions) (store.ApplyResult, error) {
	opts.DryRun = true
	return s.opts.Store.Apply(ctx, objs, opts)
}

func kindOf(pool bool) string {
	if pool {
		return "pool"
	}
	return ""
}
