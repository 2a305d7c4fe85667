package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Routes of pools and claims.
const (
	routePoolList   = "GET /v1/pools"
	routePoolGet    = "GET /v1/pools/{namespace}/{name}"
	routePoolDelete = "DELETE /v1/pools/{namespace}/{name}"
	routeClaim      = "POST /v1/pools/{namespace}/{name}/claim"
)

// Claim limits.
const (
	// MaxClaimWait bounds how long a claim waits for a Ready sandbox:
	// below the minute a follower waits for the leader's answer to a
	// request it forwards.
	MaxClaimWait = 50 * time.Second
	// MaxClaimFiles bounds the files a claim writes.
	MaxClaimFiles = 64
)

// Codes of a claim.
const (
	// CodeNoneReady: the pool had no Ready sandbox to hand out in time
	// (503, Retry-After); it is making more.
	CodeNoneReady = "none_ready"
	// CodeExhausted: none Ready, and max keeps the pool from making more
	// until claimed sandboxes are deleted (503, Retry-After).
	CodeExhausted = "exhausted"
)

// PoolItem is a pool as the API shows it.
type PoolItem struct {
	Namespace           string            `json:"namespace"`
	Name                string            `json:"name"`
	Generation          uint64            `json:"generation"`
	ResourceVersion     uint64            `json:"resourceVersion"`
	Labels              map[string]string `json:"labels"`
	ApplySet            string            `json:"applySet"`
	CreatedAt           time.Time         `json:"createdAt"`
	UpdatedAt           time.Time         `json:"updatedAt"`
	DeletionRequestedAt *time.Time        `json:"deletionRequestedAt,omitempty"`
	Source              spec.Source       `json:"source"`
	Size                int               `json:"size"`
	Max                 int               `json:"max"`
	ClaimTTL            string            `json:"claimTTL"`
	Template            spec.Spec         `json:"template"`
	Status              PoolStatus        `json:"status"`
}

// PoolStatus is what the controller last observed of a pool's sandboxes.
type PoolStatus struct {
	Phase              string      `json:"phase"`
	ObservedGeneration uint64      `json:"observedGeneration"`
	Ready              int         `json:"ready"`
	Pending            int         `json:"pending"`
	Claimed            int         `json:"claimed"`
	Conditions         []Condition `json:"conditions"`
	UpdatedAt          *time.Time  `json:"updatedAt"`
}

// PoolList is the body of GET /v1/pools.
type PoolList struct {
	Items    []PoolItem `json:"items"`
	Revision uint64     `json:"revision"`
}

// ClaimRequest is the optional body of POST /v1/pools/{ns}/{name}/claim.
type ClaimRequest struct {
	// TTL is the claimed sandbox's lifetime from the claim (a Go
	// duration); empty takes the pool's claim_ttl.
	TTL string `json:"ttl,omitempty"`
	// Labels are added to the sandbox's.
	Labels map[string]string `json:"labels,omitempty"`
	// Files are written into the sandbox, path to content, before the
	// answer.
	Files map[string]string `json:"files,omitempty"`
	// Wait is how long to wait for a Ready sandbox when none is (a Go
	// duration; none by default, at most MaxClaimWait).
	Wait string `json:"wait,omitempty"`
}

// ItemPool is, on a sandbox of a pool, the pool and the claim.
type ItemPool struct {
	Name      string     `json:"name"`
	Claimed   bool       `json:"claimed"`
	ClaimedAt *time.Time `json:"claimedAt,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

func (s *Server) routePools() {
	s.mux.HandleFunc(routePoolList, s.handle(s.poolList))
	s.mux.HandleFunc(routePoolGet, s.handle(s.poolGet))
	s.mux.HandleFunc(routePoolDelete, s.handle(s.poolDelete))
	s.mux.HandleFunc(routeClaim, s.handle(s.claim))
}

func poolItemOf(rec store.Record) PoolItem {
	labels := rec.Sandbox.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	st := rec.Status
	it := PoolItem{
		Namespace: rec.Sandbox.Namespace, Name: rec.Sandbox.Name, Generation: rec.Generation,
		ResourceVersion: rec.ResourceVersion, Labels: labels, ApplySet: rec.ApplySet,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, DeletionRequestedAt: rec.DeletionRequestedAt,
		Source: rec.Sandbox.Source, Size: rec.Pool.Size, Max: rec.Pool.Max, ClaimTTL: rec.Pool.ClaimTTL,
		Template: rec.Sandbox.Spec,
		Status: PoolStatus{Phase: string(st.Phase), ObservedGeneration: st.ObservedGeneration,
			Conditions: conditionsOf(st.Conditions), UpdatedAt: updatedAtOf(st)},
	}
	if it.Status.Phase == "" {
		it.Status.Phase = string(store.PhasePending)
	}
	if c := st.Pool; c != nil {
		it.Status.Ready, it.Status.Pending, it.Status.Claimed = c.Ready, c.Pending, c.Claimed
	}
	return it
}

func (s *Server) poolList(w http.ResponseWriter, r *http.Request) error {
	sel, err := parseSelector("selector", r.URL.Query().Get("selector"))
	if err != nil {
		return err
	}
	recs, rev, err := s.opts.Store.List(r.Context(), store.ListOptions{Namespace: r.URL.Query().Get("namespace"), Selector: sel})
	if err != nil {
		return err
	}
	out := PoolList{Items: []PoolItem{}, Revision: rev}
	for _, rec := range recs {
		if rec.Pool != nil {
			out.Items = append(out.Items, poolItemOf(rec))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getPool reads the pool the path names; a sandbox there is not one.
func (s *Server) getPool(r *http.Request) (store.Record, error) {
	rec, err := s.opts.Store.Get(r.Context(), pathKey(r))
	if err == nil && rec.Pool == nil {
		err = store.ErrNotFound
	}
	if err != nil {
		ae := storeError(err)
		if ae.status == http.StatusNotFound {
			ae.message = "No pool " + r.PathValue("name") + " exists in namespace " + r.PathValue("namespace") + "."
		}
		return store.Record{}, ae
	}
	return rec, nil
}

func (s *Server) poolGet(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.getPool(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, poolItemOf(rec))
	return nil
}

// poolDelete marks the pool for deletion (202): its unclaimed sandboxes
// are deleted, then the pool; claimed ones stay until deleted or expired.
func (s *Server) poolDelete(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.getPool(r); err != nil {
		return err
	}
	rec, err := s.opts.Store.Delete(r.Context(), pathKey(r))
	if err != nil {
		return notFoundAs(err, r)
	}
	writeJSON(w, http.StatusAccepted, poolItemOf(rec))
	return nil
}

// claim hands out a Ready sandbox of the pool, marked claimed in one store
// transaction, waiting for one up to the request's wait. Files asked for
// are written into it before the answer; if that fails, the sandbox is
// deleted (it may hold part of them) and the claim fails.
func (s *Server) claim(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	var req ClaimRequest
	if hasBody(r) {
		if err := s.decodeBody(w, r, &req); err != nil {
			return err
		}
	}
	opts, wait, err := s.claimOptions(&req)
	if err != nil {
		return err
	}
	opts.Fresh = s.opts.Fresh
	key := pathKey(r)
	ctx := r.Context()
	waited := false
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	var rec store.Record
	for {
		// A claim that may wait watches from before it looked, so that
		// no sandbox turning Ready in between is missed.
		var rev uint64
		var err error
		if wait > 0 {
			if rev, err = s.opts.Store.Revision(ctx); err != nil {
				return err
			}
		}
		if rec, err = s.opts.Store.Claim(ctx, key, opts); err == nil {
			break
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.metrics.claimed("not_found", start)
			return errorf(http.StatusNotFound, CodeNotFound, "No pool %s exists in namespace %s.", r.PathValue("name"), r.PathValue("namespace"))
		case !errors.Is(err, store.ErrNoneReady):
			return err
		}
		if wait <= 0 {
			s.metrics.claimed("refused", start)
			return s.noneReady(ctx, r, wait)
		}
		waited = true
		if err := s.awaitPoolChange(ctx, rev, key+"-", deadline); err != nil {
			if errors.Is(err, errClaimWaitOver) {
				s.metrics.claimed("refused", start)
				return s.noneReady(ctx, r, wait)
			}
			return err
		}
	}
	// A claim nobody receives is dropped: the sandbox is deleted (the
	// pool makes another) rather than left claimed by no one.
	drop := func(why string) {
		if _, derr := s.opts.Store.Delete(context.WithoutCancel(ctx), rec.Key()); derr != nil {
			s.log.Warn("delete a claimed sandbox nobody holds", "sandbox", rec.Key(), "why", why, "err", derr)
		}
	}
	if len(req.Files) > 0 {
		if err := s.writeClaimFiles(r, rec, req.Files); err != nil {
			s.metrics.claimed("failed", start)
			drop("its files could not be written")
			return err
		}
	}
	if ctx.Err() != nil {
		s.metrics.claimed("failed", start)
		drop("the client left before the answer")
		return ctx.Err()
	}
	result := "immediate"
	if waited {
		result = "waited"
	}
	s.metrics.claimed(result, start)
	s.log.Info("claimed", "pool", key, "sandbox", rec.Key(), "result", result, "duration", time.Since(start))
	writeJSON(w, http.StatusOK, itemOf(rec))
	return nil
}

func (s *Server) noneReady(ctx context.Context, r *http.Request, wait time.Duration) error {
	name := r.PathValue("namespace") + "/" + r.PathValue("name")
	if rec, err := s.opts.Store.Get(ctx, pathKey(r)); err == nil && rec.Pool != nil && rec.Status.Pool != nil && rec.Status.Pool.Pending == 0 {
		if c, ok := rec.Status.Condition("Exhausted"); ok && c.Status == store.ConditionTrue {
			return errorf(http.StatusServiceUnavailable, CodeExhausted,
				"The pool %s has no Ready sandbox and is at its max (%d): it makes more only when claimed sandboxes are deleted or expire, or max is raised.",
				name, rec.Pool.Max).retry()
		}
	}
	msg := "The pool %s has no Ready sandbox to hand out now; it is making more: retry shortly, or claim with a wait."
	if wait > 0 {
		msg = "The pool %s had no Ready sandbox to hand out within the wait (" + wait.String() + "); it is making more: retry shortly."
	}
	return errorf(http.StatusServiceUnavailable, CodeNoneReady, msg, name).retry()
}

var errClaimWaitOver = errors.New("claim wait over")

// awaitPoolChange returns once a key with prefix changes after rev (a
// pool's sandbox became Ready, say), or errClaimWaitOver at deadline.
func (s *Server) awaitPoolChange(ctx context.Context, rev uint64, prefix string, deadline <-chan time.Time) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wt, err := s.opts.Store.Watch(wctx, rev)
	if errors.Is(err, store.ErrCompacted) {
		return nil // fell behind already: look again
	}
	if err != nil {
		return err
	}
	for {
		select {
		case ch, ok := <-wt.Changes():
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return nil
			}
			if strings.HasPrefix(ch.Key, prefix) && ch.Kind != store.ChangeEvents {
				return nil
			}
		case <-deadline:
			return errClaimWaitOver
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return store.ErrClosed
		}
	}
}

func (s *Server) claimOptions(req *ClaimRequest) (store.ClaimOptions, time.Duration, error) {
	var opts store.ClaimOptions
	var wait time.Duration
	var problems []any
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("ttl %q is not a duration such as \"30m\"", req.TTL))
		case d < spec.MinTTL || d > spec.MaxTTL:
			problems = append(problems, fmt.Sprintf("ttl is %s; it must be between %s and %s", d, spec.MinTTL, spec.MaxTTL))
		}
		opts.TTL = d
	}
	if req.Wait != "" {
		d, err := time.ParseDuration(req.Wait)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("wait %q is not a duration such as \"10s\"", req.Wait))
		case d < 0 || d > MaxClaimWait:
			problems = append(problems, fmt.Sprintf("wait is %s; it must be between 0s and %s", d, MaxClaimWait))
		}
		wait = d
	}
	for _, p := range spec.LabelProblems(req.Labels) {
		problems = append(problems, p)
	}
	for k := range req.Labels {
		if msg := store.ClaimLabelProblem(k); msg != "" {
			problems = append(problems, msg)
		}
	}
	opts.Labels = req.Labels
	if len(req.Files) > MaxClaimFiles {
		problems = append(problems, fmt.Sprintf("%d files; a claim writes at most %d", len(req.Files), MaxClaimFiles))
	}
	for p := range req.Files {
		if err := sandboxio.CheckPath(p); err != nil {
			problems = append(problems, fmt.Sprintf("files[%q]: %v", p, err))
		}
	}
	if len(problems) > 0 {
		return opts, 0, errorf(http.StatusBadRequest, CodeInvalid, "The claim request is invalid; nothing was claimed.").with(problems...)
	}
	return opts, wait, nil
}

// writeClaimFiles writes the claim's files into the claimed sandbox,
// through the same layer as PUT .../files.
func (s *Server) writeClaimFiles(r *http.Request, rec store.Record, files map[string]string) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	t := sandboxio.Target{Namespace: rec.Sandbox.Namespace, Name: rec.Sandbox.Name, JobID: rec.Sandbox.JobID(),
		Phase: string(rec.Status.Phase), AllocID: rec.Status.AllocID}
	for p, content := range files {
		if int64(len(content)) > in.MaxFileBytes() {
			return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "files[%q] has %d bytes; the limit is %d.", p, len(content), in.MaxFileBytes())
		}
		_, err := in.Write(r.Context(), t, caller(r), sandboxio.WriteRequest{
			Path: p, Mode: fs.FileMode(0o644), Mkdir: true, Size: int64(len(content)), Body: strings.NewReader(content),
		})
		if err != nil {
			return insideError(err)
		}
	}
	return nil
}

// claimMetrics are the claim path's measurements.
type claimMetrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newClaimMetrics(reg prometheus.Registerer) claimMetrics {
	m := claimMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkernel_claims_total",
			Help: "Claims by result: immediate (served at once), waited (served after waiting), refused (none Ready in time), not_found (no such pool), failed (its files could not be written).",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentkernel_claim_duration_seconds",
			Help:    "Time to answer a claim, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
	}
	for _, r := range []string{"immediate", "waited", "refused", "not_found", "failed"} {
		m.total.WithLabelValues(r)
	}
	m.total = register(reg, m.total)
	m.duration = register(reg, m.duration)
	return m
}

func (m *metrics) claimed(result string, start time.Time) {
	m.claims.total.WithLabelValues(result).Inc()
	m.claims.duration.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

// itemPoolOf is the pool part of a sandbox's item.
func itemPoolOf(m *store.Member) *ItemPool {
	if m == nil {
		return nil
	}
	return &ItemPool{Name: m.Pool, Claimed: m.Claimed(), ClaimedAt: m.ClaimedAt, ExpiresAt: m.ExpiresAt}
}

// hasBody reports whether the request has a body: the claim's is
// optional, sent with a length or chunked.
func hasBody(r *http.Request) bool {
	switch {
	case r.ContentLength > 0:
		return true
	case r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody:
		return false
	}
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); err != nil {
		return false
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{br, r.Body}
	return true
}
