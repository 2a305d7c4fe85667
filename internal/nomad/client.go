package nomad

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Config overrides what the nomad CLI's environment gives: NOMAD_ADDR,
// NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION, NOMAD_CACERT,
// NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY and the rest are read by
// api.DefaultConfig, and a non-empty field here wins over them.
type Config struct {
	Address    string
	Token      string
	Namespace  string
	Region     string
	CACert     string
	ClientCert string
	ClientKey  string
	// TLSServerName and Insecure mirror NOMAD_TLS_SERVER_NAME and
	// NOMAD_SKIP_VERIFY.
	TLSServerName string
	Insecure      bool
	// HTTPClient, when set, carries the requests instead of the client
	// nomad/api would build (tests run against an in-memory network).
	HTTPClient *http.Client
	// OnRequest, when set, is told of every HTTP request made to Nomad:
	// the endpoint with IDs replaced by placeholders, the status code (0
	// when no response came) and the duration. Metrics and readiness
	// hang off it, without this package depending on either.
	OnRequest func(method, endpoint string, code int, d time.Duration)
	// RequestTimeout bounds every request that is not meant to wait: a
	// Nomad server that vanished without a reset would otherwise hold a
	// caller for as long as the kernel keeps the connection (about 15
	// minutes). A blocking query gets its wait on top, and the event
	// stream, which has its own heartbeat timeout, none. Zero means
	// DefaultRequestTimeout; negative, no bound.
	RequestTimeout time.Duration
}

// DefaultRequestTimeout bounds a request that is not a blocking query or
// a stream.
const DefaultRequestTimeout = 30 * time.Second

// Client is the controller's narrow view of Nomad: the calls it makes,
// each taking a context and returning classified errors.
type Client struct {
	api       *api.Client
	namespace string
	// exec carries exec sessions: the same agent, settings and token
	// as api, over the transport before instrumenting, as nomad/api's
	// WebSocket dialer needs; onRequest reports them instead.
	exec      *api.Client
	onRequest func(method, endpoint string, code int, d time.Duration)

	// programs remembers the programs checkProgram found, by allocation,
	// task and name.
	progMu   sync.Mutex
	programs map[string]bool
}

// NewClient builds a client the way the nomad CLI does, then applies cfg.
func NewClient(cfg Config) (*Client, error) {
	c := api.DefaultConfig()
	if cfg.Address != "" {
		c.Address = cfg.Address
	}
	if cfg.Token != "" {
		c.SecretID = cfg.Token
	}
	if cfg.Namespace != "" {
		c.Namespace = cfg.Namespace
	}
	if cfg.Region != "" {
		c.Region = cfg.Region
	}
	if c.TLSConfig == nil {
		c.TLSConfig = &api.TLSConfig{}
	}
	if cfg.CACert != "" {
		c.TLSConfig.CACert = cfg.CACert
	}
	if cfg.ClientCert != "" {
		c.TLSConfig.ClientCert = cfg.ClientCert
	}
	if cfg.ClientKey != "" {
		c.TLSConfig.ClientKey = cfg.ClientKey
	}
	if cfg.TLSServerName != "" {
		c.TLSConfig.TLSServerName = cfg.TLSServerName
	}
	if cfg.Insecure {
		c.TLSConfig.Insecure = true
	}
	if cfg.HTTPClient != nil {
		// A copy: the transport is wrapped below, and the caller's
		// client may be shared.
		hc := *cfg.HTTPClient
		c.HttpClient = &hc
	}
	timeout := cfg.RequestTimeout
	if timeout == 0 {
		timeout = DefaultRequestTimeout
	}
	plain, err := instrument(c, cfg.OnRequest, timeout)
	if err != nil {
		return nil, err
	}
	ac, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("create nomad client for %s: %w", c.Address, err)
	}
	ns := c.Namespace
	if ns == "" {
		ns = "default"
	}
	cl := &Client{api: ac, namespace: ns, exec: ac, onRequest: cfg.OnRequest}
	if plain != nil {
		ec := *c
		hc := *c.HttpClient
		hc.Transport = plain
		ec.HttpClient = &hc
		if cl.exec, err = api.NewClient(&ec); err != nil {
			return nil, fmt.Errorf("create nomad exec client for %s: %w", c.Address, err)
		}
	}
	return cl, nil
}

// Address is the Nomad HTTP address in use.
func (c *Client) Address() string { return c.api.Address() }

// Namespace is the default namespace: NOMAD_NAMESPACE, or "default".
func (c *Client) Namespace() string { return c.namespace }

// API exposes the underlying client for the watcher and tests.
func (c *Client) API() *api.Client { return c.api }

func query(ctx context.Context, ns string) *api.QueryOptions {
	return (&api.QueryOptions{Namespace: ns}).WithContext(ctx)
}

func write(ctx context.Context, ns string) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: ns}).WithContext(ctx)
}

// Job reads a job. ErrNotFound when Nomad has none by that ID.
func (c *Client) Job(ctx context.Context, ns, id string) (*api.Job, error) {
	job, _, err := c.api.Jobs().Info(id, query(ctx, ns))
	if err != nil {
		return nil, classify(fmt.Sprintf("get job %q in namespace %q", id, ns), err)
	}
	return job, nil
}

// RegisterResult is what a register tells the caller.
type RegisterResult struct {
	EvalID string
	// Index is the raft index of the write. It is not a safe
	// check-and-set index for the next register: for an identical job real
	// Nomad returns the job's ModifyIndex there (fact 4.5), so the next
	// write must take JobModifyIndex from a read or a plan.
	Index uint64
	// Changed reports whether Nomad took the job as a new version: its
	// JobModifyIndex is then the register's own index, which is also the
	// evaluation's. An identical job gets an evaluation but keeps its
	// JobModifyIndex (fact 80).
	Changed bool
}

// Register writes a job with check-and-set, always: modifyIndex 0 creates
// only if no job has the ID, otherwise it must equal the live job's
// JobModifyIndex. A lost race is ErrConflict.
func (c *Client) Register(ctx context.Context, job *api.Job, modifyIndex uint64) (RegisterResult, error) {
	ns := "default"
	if job.Namespace != nil {
		ns = *job.Namespace
	}
	resp, _, err := c.api.Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: modifyIndex}, write(ctx, ns))
	if err != nil {
		return RegisterResult{}, classify(fmt.Sprintf("register job %q (check-and-set index %d)", deref(job.ID), modifyIndex), err)
	}
	return RegisterResult{EvalID: resp.EvalID, Index: resp.JobModifyIndex, Changed: resp.JobModifyIndex == resp.EvalCreateIndex}, nil
}

// ownerRE keeps the owner ID a plain token, so it can stand inside a
// filter expression's string literal without escaping.
var ownerRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// listPageSize bounds one list response; the controller pages through.
const listPageSize = 500

// ListOwned lists the jobs stamped with owner, in every namespace when ns
// is "*". Nomad evaluates the filter against the full job (fact 13), so
// Meta needs no second request; meta=true brings it into the stubs.
func (c *Client) ListOwned(ctx context.Context, ns, owner string) ([]*api.JobListStub, uint64, error) {
	if !ownerRE.MatchString(owner) {
		return nil, 0, fmt.Errorf("list owned jobs: owner %q is not a plain token", owner)
	}
	filter := fmt.Sprintf(`Meta[%s] == %s`, strconv.Quote(MetaOwner), strconv.Quote(owner))
	var all []*api.JobListStub
	var index uint64
	next := ""
	for {
		q := query(ctx, ns)
		q.Filter = filter
		q.PerPage = listPageSize
		q.NextToken = next
		q.Params = map[string]string{"meta": "true"}
		stubs, meta, err := c.api.Jobs().List(q)
		if err != nil {
			return nil, 0, classify(fmt.Sprintf("list jobs owned by %q in namespace %q", owner, ns), err)
		}
		all = append(all, stubs...)
		if index == 0 {
			index = meta.LastIndex
		}
		if meta.NextToken == "" {
			return all, index, nil
		}
		next = meta.NextToken
	}
}

// ListWantedAllocs lists the allocations Nomad wants running (desired
// status run) of the given jobs, in ns ("*" for every namespace), with
// one paged request for all of them rather than one per job: the filter
// keeps the jobs named as the controller names them, and only those of
// jobs are returned. Task states are left out; nothing here reads them.
func (c *Client) ListWantedAllocs(ctx context.Context, ns string, jobs []*api.JobListStub) ([]*api.AllocationListStub, error) {
	type jobRef struct{ ns, id string }
	want := make(map[jobRef]bool, len(jobs))
	for _, j := range jobs {
		want[jobRef{cmp.Or(j.Namespace, "default"), j.ID}] = true
	}
	filter := fmt.Sprintf(`JobID matches %s and DesiredStatus == %s`,
		strconv.Quote("^"+regexp.QuoteMeta(spec.JobIDPrefix)), strconv.Quote(api.AllocDesiredStatusRun))
	var all []*api.AllocationListStub
	next := ""
	for {
		q := query(ctx, ns)
		q.Filter = filter
		q.PerPage = listPageSize
		q.NextToken = next
		q.Params = map[string]string{"task_states": "false"}
		allocs, meta, err := c.api.Allocations().List(q)
		if err != nil {
			return nil, classify(fmt.Sprintf("list allocations of owned jobs in namespace %q", ns), err)
		}
		for _, a := range allocs {
			if want[jobRef{cmp.Or(a.Namespace, "default"), a.JobID}] {
				all = append(all, a)
			}
		}
		if meta.NextToken == "" {
			return all, nil
		}
		next = meta.NextToken
	}
}

// CountManaged counts the jobs in ns ("*" for all) that agentkernel
// manages, whatever their owner: agentkernel's own backend and every
// controller stamp MetaManaged.
func (c *Client) CountManaged(ctx context.Context, ns string) (int, error) {
	n, next := 0, ""
	for {
		q := query(ctx, ns)
		q.Filter = fmt.Sprintf(`Meta[%s] == "true"`, strconv.Quote(MetaManaged))
		q.PerPage = listPageSize
		q.NextToken = next
		q.Params = map[string]string{"meta": "true"}
		stubs, meta, err := c.api.Jobs().List(q)
		if err != nil {
			return 0, classify(fmt.Sprintf("list agentkernel jobs in namespace %q", ns), err)
		}
		n += len(stubs)
		if meta.NextToken == "" {
			return n, nil
		}
		next = meta.NextToken
	}
}

// Stop deregisters a job and keeps it, stopped (Stop=true), as `nomad job
// stop` does.
//
// It returns the stop's index, which is the stopped job's new
// JobModifyIndex: a stop is a new version of the job (fact 120).
func (c *Client) Stop(ctx context.Context, ns, id string) (uint64, error) {
	_, wm, err := c.api.Jobs().Deregister(id, false, write(ctx, ns))
	if err != nil {
		return 0, classify(fmt.Sprintf("stop job %q in namespace %q", id, ns), err)
	}
	return wm.LastIndex, nil
}

// Purge removes a job and its allocations from Nomad at once. Purging a
// job that does not exist succeeds, as on real Nomad (fact 62).
func (c *Client) Purge(ctx context.Context, ns, id string) error {
	_, _, err := c.api.Jobs().Deregister(id, true, write(ctx, ns))
	return classify(fmt.Sprintf("purge job %q in namespace %q", id, ns), err)
}

// Allocations lists a job's allocations (none for an unknown job, fact 61).
func (c *Client) Allocations(ctx context.Context, ns, id string) ([]*api.AllocationListStub, error) {
	allocs, _, err := c.api.Jobs().Allocations(id, false, query(ctx, ns))
	if err != nil {
		return nil, classify(fmt.Sprintf("list allocations of job %q in namespace %q", id, ns), err)
	}
	return allocs, nil
}

// Evaluations lists a job's evaluations (none for an unknown job).
func (c *Client) Evaluations(ctx context.Context, ns, id string) ([]*api.Evaluation, error) {
	evals, _, err := c.api.Jobs().Evaluations(id, query(ctx, ns))
	if err != nil {
		return nil, classify(fmt.Sprintf("list evaluations of job %q in namespace %q", id, ns), err)
	}
	return evals, nil
}

// Plan asks Nomad what registering job would change, with a diff. Its
// JobModifyIndex is the live job's, the one check-and-set wants (fact
// 4.6); planning never creates the job.
func (c *Client) Plan(ctx context.Context, job *api.Job) (*api.JobPlanResponse, error) {
	ns := "default"
	if job.Namespace != nil {
		ns = *job.Namespace
	}
	resp, _, err := c.api.Jobs().PlanOpts(job, &api.PlanOptions{Diff: true}, write(ctx, ns))
	if err != nil {
		return nil, classify(fmt.Sprintf("plan job %q", deref(job.ID)), err)
	}
	return resp, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// NamespaceInfo reads a namespace. ErrNotFound when Nomad has none by
// that name.
func (c *Client) NamespaceInfo(ctx context.Context, name string) (*api.Namespace, error) {
	ns, _, err := c.api.Namespaces().Info(name, query(ctx, ""))
	if err != nil {
		return nil, classify(fmt.Sprintf("get namespace %q", name), err)
	}
	return ns, nil
}

// Planner answers "what would Nomad do with this sandbox?" for akctl diff:
// the job rendered as the controller would register it, planned with a
// diff against the live job. Planning writes nothing.
type Planner struct {
	Client *Client
	Render RenderOptions
	// AdoptOwners are the owners whose jobs count as this controller's
	// own, as the reconciler counts them.
	AdoptOwners []string
}

// Reasons an Obstacle gives. The first two are the reasons of the Synced
// condition the reconciler writes when it meets the job.
const (
	ObstacleForeignJob       = "ForeignJob"
	ObstacleOtherOwner       = "OwnedByAnotherController"
	ObstacleNamespaceMissing = "NamespaceMissing"
)

// Obstacle is what registering a sandbox's job would run into that a
// plan does not show. The zero Obstacle is none.
type Obstacle struct {
	// Reason is one of the Obstacle* reasons.
	Reason string
	// Message says what stands in the way and what to do, in full
	// sentences.
	Message string
}

// Preflight says what the controller would meet in Nomad when it
// registers the sandbox's job: a job by that ID that it does not own,
// which it leaves untouched, or a namespace Nomad does not have, where
// Nomad refuses the job. A token that may not read the job or the
// namespace tells nothing: that is no obstacle (the plan reports it).
// With an empty Render.Owner only a job that no controller owns counts.
func (p Planner) Preflight(ctx context.Context, sb *spec.Sandbox) (Obstacle, error) {
	jobID := sb.JobID()
	live, err := p.Client.Job(ctx, sb.Namespace, jobID)
	switch {
	case err == nil:
		switch OwnerOf(live, p.Render.Owner) {
		case Foreign:
			return Obstacle{Reason: ObstacleForeignJob, Message: fmt.Sprintf(
				"Nomad job %s exists but was not created by this controller (no %s in its Meta); the controller would leave it untouched and the sandbox would be in Conflict. Remove or rename the job, or rename the sandbox.",
				jobID, MetaOwner)}, nil
		case OtherOwner:
			// Without an owner of its own the planner cannot tell whose
			// the job is.
			if owner := live.Meta[MetaOwner]; p.Render.Owner != "" && !slices.Contains(p.AdoptOwners, owner) {
				return Obstacle{Reason: ObstacleOtherOwner, Message: fmt.Sprintf(
					"Nomad job %s belongs to another controller (owner %s); this one would leave it untouched and the sandbox would be in Conflict.",
					jobID, owner)}, nil
			}
		}
		return Obstacle{}, nil
	case errors.Is(err, ErrPermissionDenied):
		return Obstacle{}, nil
	case !errors.Is(err, ErrNotFound):
		return Obstacle{}, fmt.Errorf("check job %q: %w", jobID, err)
	}
	_, err = p.Client.NamespaceInfo(ctx, sb.Namespace)
	switch {
	case errors.Is(err, ErrNotFound):
		return Obstacle{Reason: ObstacleNamespaceMissing, Message: fmt.Sprintf(
			"Nomad has no namespace %q; it would refuse the sandbox's job and the sandbox would be Failed until the namespace is created.",
			sb.Namespace)}, nil
	case err == nil, errors.Is(err, ErrPermissionDenied):
		return Obstacle{}, nil
	}
	return Obstacle{}, fmt.Errorf("check namespace %q: %w", sb.Namespace, err)
}

// Plan renders and plans one sandbox.
func (p Planner) Plan(ctx context.Context, sb *spec.Sandbox) (*api.JobPlanResponse, error) {
	job, err := Render(sb, p.Render)
	if err != nil {
		return nil, err
	}
	return p.Client.Plan(ctx, job)
}
