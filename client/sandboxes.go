package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Sandbox is a declared sandbox and what the controller observed of it.
type Sandbox struct {
	Namespace       string            `json:"namespace"`
	Name            string            `json:"name"`
	Generation      uint64            `json:"generation"`
	ResourceVersion uint64            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels"`
	ApplySet        string            `json:"applySet"`
	Hash            string            `json:"hash"`
	CreatedAt       time.Time         `json:"createdAt"`
	UpdatedAt       time.Time         `json:"updatedAt"`
	// DeletionRequestedAt is set while the sandbox's Nomad job is being
	// removed.
	DeletionRequestedAt *time.Time `json:"deletionRequestedAt,omitempty"`
	Source              Source     `json:"source"`
	Spec                Spec       `json:"spec"`
	// Pool is set on a sandbox of a pool.
	Pool   *PoolMembership `json:"pool,omitempty"`
	Status Status          `json:"status"`
}

// PoolMembership says which pool made a sandbox, and whether and until
// when it is claimed.
type PoolMembership struct {
	Name      string     `json:"name"`
	Claimed   bool       `json:"claimed"`
	ClaimedAt *time.Time `json:"claimedAt,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// Source is where a sandbox was declared.
type Source struct {
	File        string `json:"file"`
	StartLine   int    `json:"startLine"`
	StartColumn int    `json:"startColumn"`
	EndLine     int    `json:"endLine"`
	EndColumn   int    `json:"endColumn"`
}

// Spec is what runs, with every default applied.
type Spec struct {
	Driver    string            `json:"driver"`
	Image     string            `json:"image,omitempty"`
	Command   []string          `json:"command"`
	Profile   string            `json:"profile"`
	VCPUs     float64           `json:"vcpus"`
	MemoryMB  int               `json:"memoryMB"`
	Network   string            `json:"network"`
	Ports     []SpecPort        `json:"ports,omitempty"`
	ReadOnly  bool              `json:"readOnly"`
	Env       map[string]string `json:"env,omitempty"`
	Files     []SpecFile        `json:"files,omitempty"`
	Secrets   []SpecSecret      `json:"secrets,omitempty"`
	TTL       string            `json:"ttl,omitempty"`
	ExpiresAt string            `json:"expiresAt,omitempty"`
	OnExpiry  string            `json:"onExpiry,omitempty"`
	State     string            `json:"state"`
	Placement Placement         `json:"placement"`
}

// SpecPort is a declared port; Static 0 is a dynamic host port.
type SpecPort struct {
	Label  string `json:"label"`
	To     int    `json:"to,omitempty"`
	Static int    `json:"static,omitempty"`
}

// SpecFile is content placed in the sandbox before its task starts.
type SpecFile struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    string `json:"mode"`
}

// SpecSecret is a Nomad Variable item given to the sandbox as Env.
type SpecSecret struct {
	Env      string `json:"env"`
	Variable string `json:"variable"`
	Key      string `json:"key"`
}

// Placement narrows where Nomad may place the sandbox.
type Placement struct {
	Datacenters []string     `json:"datacenters,omitempty"`
	NodePool    string       `json:"nodePool,omitempty"`
	Constraints []Constraint `json:"constraints,omitempty"`
}

// Constraint is a Nomad placement constraint.
type Constraint struct {
	Attribute string `json:"attribute,omitempty"`
	Operator  string `json:"operator"`
	Value     string `json:"value,omitempty"`
}

// Status is what the controller last observed.
type Status struct {
	// Phase is Pending, Running, Stopped, Failed, Deleting...
	Phase              string `json:"phase"`
	ObservedGeneration uint64 `json:"observedGeneration"`
	JobID              string `json:"jobID"`
	JobModifyIndex     uint64 `json:"jobModifyIndex"`
	JobVersion         uint64 `json:"jobVersion"`
	AllocJobVersion    uint64 `json:"allocJobVersion"`
	AllocID            string `json:"allocID"`
	Node               string `json:"node"`
	Ports              []Port `json:"ports"`
	LastError          string `json:"lastError"`
	// NextAttemptAt is when the controller retries a refused job.
	NextAttemptAt *time.Time  `json:"nextAttemptAt,omitempty"`
	Conditions    []Condition `json:"conditions"`
	UpdatedAt     *time.Time  `json:"updatedAt"`
}

// Port is a port Nomad allocated to the sandbox.
type Port struct {
	Label  string `json:"label"`
	HostIP string `json:"hostIP"`
	Value  int    `json:"value"`
	To     int    `json:"to"`
}

// Condition is one observed aspect of a sandbox, in Kubernetes' shape.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Condition returns the condition of the type, if the sandbox has one.
func (s *Sandbox) Condition(typ string) (Condition, bool) {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// Ready reports whether the current generation runs: its Ready condition
// is True for it, or it is declared stopped and is Stopped.
func (s *Sandbox) Ready() bool {
	if s.Status.ObservedGeneration != s.Generation || s.DeletionRequestedAt != nil {
		return false
	}
	if s.Spec.State == "stopped" {
		return s.Status.Phase == "Stopped"
	}
	c, ok := s.Condition("Ready")
	return ok && c.Status == "True"
}

// HCLFile is one file of declarations.
type HCLFile struct {
	// Name is used in error positions (file:line).
	Name string
	Src  []byte
}

// ApplyOptions shape an apply.
type ApplyOptions struct {
	// Namespace is where declarations that name none go; empty means the
	// controller's default.
	Namespace string
	// Vars are variable values, "name=value" as akctl's -var takes them.
	Vars []string
	// Environ is what env() reads; nil reads nothing.
	Environ []string
	// ApplySet is recorded on every sandbox and scopes Prune.
	ApplySet string
	// Prune deletes the sandboxes of ApplySet and/or PruneSelector that
	// the files do not declare.
	Prune         bool
	PruneSelector string
	// DryRun reports what would change without writing.
	DryRun bool
}

// ApplyResult is what an apply did.
type ApplyResult struct {
	Revision uint64         `json:"revision"`
	DryRun   bool           `json:"dryRun"`
	Changed  bool           `json:"changed"`
	Results  []ObjectResult `json:"results"`
}

// ObjectResult is what an apply did to one sandbox.
type ObjectResult struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Kind is "pool" for a pool, empty for a sandbox.
	Kind string `json:"kind,omitempty"`
	// Action is created, configured, unchanged or pruned.
	Action          string `json:"action"`
	Generation      uint64 `json:"generation"`
	ResourceVersion uint64 `json:"resourceVersion"`
}

// ApplyHCL validates the declarations here, as akctl does, and applies
// them. Invalid declarations fail with ErrInvalid and every problem at
// its file:line, before anything is sent.
func (c *Client) ApplyHCL(ctx context.Context, files []HCLFile, o ApplyOptions) (*ApplyResult, error) {
	opts := spec.Options{DefaultNamespace: o.Namespace, Environ: o.Environ}
	for _, v := range o.Vars {
		vv, err := spec.ParseVarFlag(v)
		if err != nil {
			return nil, fmt.Errorf("%w: variable %q: %v", ErrInvalid, v, err)
		}
		opts.Vars = append(opts.Vars, vv)
	}
	if opts.DefaultNamespace == "" {
		var vi struct {
			DefaultNamespace string `json:"defaultNamespace"`
		}
		if err := c.do(ctx, http.MethodGet, "/v1/version", nil, nil, &vi); err != nil {
			return nil, err
		}
		opts.DefaultNamespace = vi.DefaultNamespace
	}
	srcs := make([]spec.SourceFile, 0, len(files))
	for _, f := range files {
		srcs = append(srcs, spec.SourceFile{Name: f.Name, Src: f.Src})
	}
	res, diags := spec.LoadSources(srcs, opts)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, diagLines(diags))
	}
	type applyObject struct {
		Sandbox spec.Sandbox       `json:"sandbox"`
		Source  spec.Source        `json:"source"`
		Pool    *spec.PoolSettings `json:"pool,omitempty"`
	}
	req := struct {
		Objects       []applyObject `json:"objects"`
		DryRun        bool          `json:"dryRun"`
		ApplySet      string        `json:"applySet"`
		Prune         bool          `json:"prune"`
		PruneSelector string        `json:"pruneSelector"`
	}{Objects: make([]applyObject, 0, len(res.Sandboxes)+len(res.Pools)), DryRun: o.DryRun, ApplySet: o.ApplySet, Prune: o.Prune, PruneSelector: o.PruneSelector}
	for _, sb := range res.Sandboxes {
		req.Objects = append(req.Objects, applyObject{Sandbox: sb, Source: sb.Source})
	}
	for _, p := range res.Pools {
		st := p.Settings
		req.Objects = append(req.Objects, applyObject{Sandbox: p.Sandbox(), Source: p.Source, Pool: &st})
	}
	var out ApplyResult
	if err := c.do(ctx, http.MethodPost, "/v1/apply", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// diagLines writes every error of diags on a line of its own, at its
// file:line:column.
func diagLines(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		b.WriteString("\n  ")
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		b.WriteString(d.Summary)
		if d.Detail != "" {
			b.WriteString(": " + d.Detail)
		}
	}
	return "the declarations are not valid:" + b.String()
}

// Get reads one sandbox; ErrNotFound when there is none.
func (c *Client) Get(ctx context.Context, namespace, name string) (*Sandbox, error) {
	var sb Sandbox
	if err := c.do(ctx, http.MethodGet, sandboxPath(namespace, name), nil, nil, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// ListOptions filter a list or a watch.
type ListOptions struct {
	// Namespace, when set, keeps that namespace's sandboxes.
	Namespace string
	// Selector is a label selector: "team=ml,tier!=batch".
	Selector string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Namespace != "" {
		q.Set("namespace", o.Namespace)
	}
	if o.Selector != "" {
		q.Set("selector", o.Selector)
	}
	return q
}

// SandboxList is a list of sandboxes and the store revision it was read
// at, from which a Watch continues.
type SandboxList struct {
	Items    []Sandbox `json:"items"`
	Revision uint64    `json:"revision"`
	StoreID  string    `json:"storeID"`
}

// List reads the sandboxes, sorted by namespace and name.
func (c *Client) List(ctx context.Context, o ListOptions) (*SandboxList, error) {
	var l SandboxList
	if err := c.do(ctx, http.MethodGet, "/v1/sandboxes", o.query(), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Delete asks for the sandbox to be deleted: its Nomad job is stopped
// and purged, then the record goes. ErrNotFound when there is none.
func (c *Client) Delete(ctx context.Context, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, sandboxPath(namespace, name), nil, nil, nil)
}

// WatchEvent is one change of a sandbox.
type WatchEvent struct {
	Revision uint64 `json:"revision"`
	// Type is spec, status, events, deleted (deletion requested) or
	// finalized (the record is gone; Sandbox is nil).
	Type    string   `json:"type"`
	Key     string   `json:"key"`
	Sandbox *Sandbox `json:"item"`
}

// WatchOptions choose what a watch reports.
type WatchOptions struct {
	ListOptions
	// Since is the revision to continue from (a list's Revision); zero
	// means from now.
	Since uint64
	// StoreID is the list's StoreID: a controller serving another store
	// refuses the watch rather than mixing revisions.
	StoreID string
}

// ErrWatchEnded is what Watch returns when the controller ended the
// stream: list again and watch from the new list's revision.
var ErrWatchEnded = errors.New("the controller ended the watch")

// Watch calls fn with each change after o.Since until fn returns false
// (Watch returns nil), ctx ends, or the stream ends.
func (c *Client) Watch(ctx context.Context, o WatchOptions, fn func(WatchEvent) bool) error {
	q := o.query()
	if o.Since != 0 {
		q.Set("since", strconv.FormatUint(o.Since, 10))
	}
	if o.StoreID != "" {
		q.Set("store", o.StoreID)
	}
	req, err := c.request(ctx, http.MethodGet, "/v1/watch", q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line struct {
			WatchEvent
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("read the watch stream: %w", err)
		}
		switch line.Type {
		case "heartbeat":
			continue
		case "error":
			if line.Error != nil {
				return fmt.Errorf("%w: %s (%s)", ErrWatchEnded, line.Error.Message, line.Error.Code)
			}
			return ErrWatchEnded
		}
		if !fn(line.WatchEvent) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the watch stream: %w", err)
	}
	return ErrWatchEnded
}

// ErrSandboxFailed is what WaitReady returns for a sandbox that failed,
// or that cannot run because another job holds its name (Conflict).
var ErrSandboxFailed = errors.New("sandbox failed")

// WaitReady waits until the sandbox's current generation is Ready and
// returns it. It fails with ErrSandboxFailed when the sandbox's phase is
// Failed, with ErrNotFound when it is deleted, and when ctx ends.
func (c *Client) WaitReady(ctx context.Context, namespace, name string) (*Sandbox, error) {
	for {
		l, err := c.List(ctx, ListOptions{Namespace: namespace})
		if err != nil {
			return nil, err
		}
		var cur *Sandbox
		for i := range l.Items {
			if l.Items[i].Name == name {
				cur = &l.Items[i]
			}
		}
		if done, err := readiness(cur, namespace, name); done {
			return cur, err
		}
		key := namespace + "/" + name
		var last *Sandbox
		var result error
		werr := c.Watch(ctx, WatchOptions{ListOptions: ListOptions{Namespace: namespace}, Since: l.Revision, StoreID: l.StoreID},
			func(ev WatchEvent) bool {
				if ev.Key != key {
					return true
				}
				done, err := readiness(ev.Sandbox, namespace, name)
				last, result = ev.Sandbox, err
				return !done
			})
		if werr == nil {
			return last, result
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(werr, ErrWatchEnded) && !isGone(werr) {
			return nil, werr
		}
		// The watch fell behind or another instance answers: list again.
	}
}

func isGone(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusGone
}

// readiness says whether a wait for sb is over, and how.
func readiness(sb *Sandbox, namespace, name string) (bool, error) {
	switch {
	case sb == nil:
		return true, &Error{StatusCode: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("sandbox %s/%s does not exist (any more)", namespace, name)}
	case sb.Ready():
		return true, nil
	case sb.DeletionRequestedAt != nil:
		return true, &Error{StatusCode: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("sandbox %s/%s is being deleted", namespace, name)}
	case sb.Status.ObservedGeneration == sb.Generation && (sb.Status.Phase == "Failed" || sb.Status.Phase == "Conflict"):
		msg := sb.Status.LastError
		if c, ok := sb.Condition("Ready"); ok && c.Message != "" {
			msg = c.Message
		}
		return true, fmt.Errorf("%w: %s/%s: %s", ErrSandboxFailed, namespace, name, msg)
	}
	return false, nil
}
