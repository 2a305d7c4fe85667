package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Store is what the reconciler needs of the desired-state store.
type Store interface {
	Get(ctx context.Context, key string) (store.Record, error)
	UpdateStatus(ctx context.Context, key string, st store.Status, events ...store.Event) error
	AppendEvent(ctx context.Context, key string, ev store.Event) error
	DeleteAt(ctx context.Context, key string, resourceVersion uint64) (store.Record, error)
	Finalize(ctx context.Context, key string, resourceVersion uint64) error
	SyncPool(ctx context.Context, key string) (store.PoolState, error)
}

// Nomad is what the reconciler needs of Nomad. Its reads go to Nomad;
// with a Cache they are for what the cache cannot answer.
type Nomad interface {
	Job(ctx context.Context, ns, id string) (*api.Job, error)
	Register(ctx context.Context, job *api.Job, modifyIndex uint64) (nomad.RegisterResult, error)
	Stop(ctx context.Context, ns, id string) (uint64, error)
	Purge(ctx context.Context, ns, id string) error
	Allocations(ctx context.Context, ns, id string) ([]*api.AllocationListStub, error)
}

// Cache is the watch-fed view of Nomad a reconcile reads instead of
// Nomad (nomad.Cache), and tells of its own writes.
type Cache interface {
	Get(key string) (*nomad.CachedJob, bool)
	Put(key string, job *api.Job, allocs []*api.AllocationListStub)
	Refresh(key string, job *api.Job)
	Wrote(key string, st nomad.JobState)
	Gone(key string)
	Invalidate(key string)
	SetVersion(key string, jobModifyIndex, version uint64)
	Release(key string, jobModifyIndex uint64)
}

// Result tells the worker what to do with the key after a successful
// reconcile, as controller-runtime's does.
type Result struct {
	// RequeueAfter > 0 looks at the key again after that long: TTL
	// expiry, waiting for a purge to finish or an allocation to start.
	RequeueAfter time.Duration
}

// Condition types written on every sandbox.
const (
	// Synced: the Nomad job is what the spec says (or there is
	// deliberately none).
	CondSynced = "Synced"
	// Ready: the sandbox's task is running.
	CondReady = "Ready"
)

// Condition reasons.
const (
	ReasonJobMatches    = "JobMatches"
	ReasonStoppedState  = "Stopped"
	ReasonForeignJob    = "ForeignJob"
	ReasonOtherOwner    = "OwnedByAnotherController"
	ReasonPolicy        = "PolicyRefused"
	ReasonNomadError    = "NomadError"
	ReasonNomadRejected = "NomadRejected"
	ReasonAllocRunning  = "AllocationRunning"
	ReasonAllocPending  = "AllocationPending"
	ReasonAllocFailed   = "AllocationFailed"
	ReasonNoAlloc       = "NoAllocation"
	ReasonUnplaceable   = "Unplaceable"
	ReasonExpired       = "Expired"
	ReasonDeleting      = "Deleting"
	ReasonStoreBehind   = "StoreBehind"
	// ReasonVersionPending: the job's current version has no allocation
	// yet; an older one may still run.
	ReasonVersionPending = "NewVersionPending"
)

// Config is the controller policy rendering and reconciling follow.
type Config struct {
	Render nomad.RenderOptions
	// Ceilings: a sandbox asking for more is refused (terminal).
	MaxVCPUs    float64
	MaxMemoryMB int
	// AllowedDrivers; empty means docker and exec (raw_exec only when
	// Render.AllowRawExec).
	AllowedDrivers []string
	// PendingRecheck is how soon a sandbox whose allocation is not yet
	// running is looked at again, in case an event is missed (30 s).
	PendingRecheck time.Duration
	// PurgeRecheck is how soon a purge is checked for completion (1 s).
	PurgeRecheck time.Duration
	// RejectedRecheck is how soon a job Nomad refused is tried again (5 min).
	RejectedRecheck time.Duration
	// Metrics, optional, receives phases and drift repairs.
	Metrics *Metrics
	// AdoptOwners lists the owner IDs of other controllers whose jobs
	// this one takes over when it declares a sandbox of the same name.
	// Jobs of any other owner are reported and left alone.
	AdoptOwners []string
	// WriteLimiter, optional, is waited on before every Nomad write: a
	// global bound on the controller's write rate. Reads are not limited,
	// so a resync of unchanged sandboxes is never slowed down.
	WriteLimiter *WriteLimiter
	// Cache, optional, is the watch-fed view of Nomad: with it, a
	// reconcile reads Nomad only where the cache cannot answer (before it
	// is synced, after a check-and-set conflict, for a changed job's
	// whole spec), or where a stale answer could do harm (before garbage
	// collection purges a job).
	Cache Cache
}

// DefaultPendingRecheck is how soon a sandbox whose allocation is not yet
// running is looked at again, in case an event is missed.
const DefaultPendingRecheck = 30 * time.Second

// Reconciler makes one sandbox's Nomad job match its declaration.
type Reconciler struct {
	store Store
	nomad Nomad
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	// gcAllowed is set once the initial list of owned jobs has completed:
	// before that, "not in the store" cannot be told from "not loaded".
	gcAllowed atomic.Bool
	// Writes counts Nomad writes (register, stop, purge) for metrics.
	writes atomic.Int64
	// hold, while set, is a garbage collection hold: the store may be
	// older than what runs, so a job registered after the hold's Nomad
	// index with another spec is not reverted.
	hold atomic.Pointer[store.GCHold]
	// pools are the keys of the pools synced so far: a change of one of
	// their sandboxes brings the pool back into the queue (PoolOf).
	pools sync.Map
	// observed maps the keys whose last sync succeeded to the generation
	// synced (Observed).
	observed sync.Map
}

// NewReconciler makes a reconciler. now may be nil (time.Now).
func NewReconciler(st Store, nc Nomad, cfg Config, log *slog.Logger, now func() time.Time) *Reconciler {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PendingRecheck == 0 {
		cfg.PendingRecheck = DefaultPendingRecheck
	}
	if cfg.PurgeRecheck == 0 {
		cfg.PurgeRecheck = time.Second
	}
	if cfg.RejectedRecheck == 0 {
		cfg.RejectedRecheck = 5 * time.Minute
	}
	return &Reconciler{store: st, nomad: nc, cfg: cfg, log: log, now: now}
}

// AllowGC enables garbage collection of owned jobs whose sandbox the
// store does not hold. Call it once the initial list has completed.
func (r *Reconciler) AllowGC() { r.gcAllowed.Store(true) }

// holdAt sets or (nil) clears the garbage collection hold.
func (r *Reconciler) holdAt(h *store.GCHold) { r.hold.Store(h) }

// storeBehindAdvice ends every StoreBehind message.
const storeBehindAdvice = "Apply the sandbox's current declaration (where it differs from this store's, the store takes it), or confirm this store (akctl gc confirm) to bring Nomad back to it."

// behindHold reports, while garbage collection is held, a record that is
// likely older than what Nomad runs, and why. A record applied since the
// hold is the user's word and goes ahead.
func (r *Reconciler) behindHold(rec store.Record, live *nomad.JobState) (string, bool) {
	h := r.hold.Load()
	if h == nil || rec.UpdatedAt.After(h.Since) {
		return "", false
	}
	jobID := spec.JobIDPrefix + rec.Sandbox.Name
	switch {
	case live == nil && rec.Status.JobModifyIndex != 0:
		// This store had the job; a newer one may have deleted it.
		return fmt.Sprintf("Nomad no longer has job %s, which this store recorded; the store looks older than what was applied (restored from a backup?), so the job is not created again. %s", jobID, storeBehindAdvice), true
	case live != nil && !knownSpec(rec, live.Meta[nomad.MetaSpecHash]) && live.JobModifyIndex > h.NomadIndex:
		return fmt.Sprintf("Nomad job %s runs a spec registered after the newest Nomad state this store recorded (index %d); the store looks older than what was applied (restored from a backup?), so the job is not reverted. %s", jobID, h.NomadIndex, storeBehindAdvice), true
	case live != nil && rec.Deleting() && rec.Status.JobModifyIndex != 0 && live.CreateIndex > rec.Status.JobModifyIndex:
		return fmt.Sprintf("Nomad job %s was created after the one this store recorded (index %d), yet the store marks its sandbox deleted; the store looks older than what was applied, so the job is not purged. %s", jobID, rec.Status.JobModifyIndex, storeBehindAdvice), true
	}
	return "", false
}

// Writes is the number of Nomad writes made so far.
func (r *Reconciler) Writes() int64 { return r.writes.Load() }

// beforeWrite counts a Nomad write and waits for the write limiter.
func (r *Reconciler) beforeWrite(ctx context.Context) error {
	// A cancelled reconcile (a stop, lost leadership) writes nothing more.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("not writing to Nomad: %w", context.Cause(ctx))
	}
	if r.cfg.WriteLimiter != nil {
		// Waiting for a turn is not being stuck, however low the rate.
		queued(ctx, true)
		err := r.cfg.WriteLimiter.Wait(ctx)
		queued(ctx, false)
		if err != nil {
			return fmt.Errorf("wait for the Nomad write limit: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("not writing to Nomad: %w", context.Cause(ctx))
		}
	}
	r.writes.Add(1)
	return nil
}

// ownership classifies a live job, counting the jobs of owners listed in
// AdoptOwners as this controller's own.
func (r *Reconciler) ownership(meta map[string]string) nomad.Ownership {
	own := nomad.OwnerOf(&api.Job{Meta: meta}, r.cfg.Render.Owner)
	if own == nomad.OtherOwner && slices.Contains(r.cfg.AdoptOwners, meta[nomad.MetaOwner]) {
		return nomad.Owned
	}
	return own
}

// liveJob is what one pass knows of a sandbox's job: from the cache when
// it can answer, else read from Nomad.
type liveJob struct {
	key, ns, id string
	// state is nil when Nomad has no such job.
	state *nomad.JobState
	// full is the whole job, once at hand; cj is the cache's entry, which
	// may hold it.
	full *api.Job
	cj   *nomad.CachedJob
	// allocs are the allocations Nomad wants running, once loaded.
	allocs []*api.AllocationListStub
	loaded bool
	cached bool
}

// look finds out what Nomad has of a sandbox's job: from the cache, or by
// reading Nomad (which then fills the cache).
func (r *Reconciler) look(ctx context.Context, key, ns, id string) (*liveJob, error) {
	lj := &liveJob{key: key, ns: ns, id: id}
	if c := r.cfg.Cache; c != nil {
		if cj, ok := c.Get(key); ok {
			lj.cached, lj.loaded = true, true
			if cj != nil {
				st := cj.Job
				lj.state, lj.cj = &st, cj
				lj.allocs = cj.Stubs()
			}
			return lj, nil
		}
	}
	job, err := r.nomad.Job(ctx, ns, id)
	switch {
	case errors.Is(err, nomad.ErrNotFound):
		job = nil
	case err != nil:
		return nil, err
	default:
		st := nomad.StateOf(job)
		lj.state, lj.full = &st, job
	}
	if c := r.cfg.Cache; c != nil {
		if job != nil {
			if _, err := r.allocations(ctx, lj); err != nil {
				return nil, err
			}
		}
		c.Put(key, job, lj.allocs)
	}
	return lj, nil
}

// whole returns the whole job, reading it when the pass does not have
// it; nil when Nomad has no such job.
func (r *Reconciler) whole(ctx context.Context, lj *liveJob) (*api.Job, error) {
	if lj.state == nil || lj.full != nil {
		return lj.full, nil
	}
	if lj.cj != nil {
		if j := lj.cj.Whole(); j != nil && deref(j.JobModifyIndex) == lj.state.JobModifyIndex {
			lj.full = j
			return j, nil
		}
	}
	job, err := r.nomad.Job(ctx, lj.ns, lj.id)
	if err != nil {
		return nil, err
	}
	st := nomad.StateOf(job)
	lj.state, lj.full = &st, job
	if c := r.cfg.Cache; c != nil {
		c.Refresh(lj.key, job)
	}
	return job, nil
}

// allocations returns the allocations Nomad wants running, reading them
// when the pass does not have them.
func (r *Reconciler) allocations(ctx context.Context, lj *liveJob) ([]*api.AllocationListStub, error) {
	if lj.loaded {
		return lj.allocs, nil
	}
	allocs, err := r.nomad.Allocations(ctx, lj.ns, lj.id)
	if err != nil {
		return nil, err
	}
	lj.allocs, lj.loaded = allocs, true
	return allocs, nil
}

// version returns the job's version: from what the pass knows, from the
// status when it recorded this very job index, or by reading the job.
func (r *Reconciler) version(ctx context.Context, lj *liveJob, recorded store.Status) (uint64, error) {
	if lj.state.VersionKnown {
		return lj.state.Version, nil
	}
	var version uint64
	if recorded.JobVersion != nil && recorded.JobModifyIndex == lj.state.JobModifyIndex {
		version = *recorded.JobVersion
		if c := r.cfg.Cache; c != nil {
			c.SetVersion(lj.key, lj.state.JobModifyIndex, version)
		}
	} else {
		lj.full, lj.cj = nil, nil
		job, err := r.whole(ctx, lj)
		if err != nil {
			return 0, err
		}
		version = deref(job.Version)
	}
	// The cache now knows which of its allocations run this version:
	// take them again.
	if c := r.cfg.Cache; c != nil && lj.cached {
		if cj, ok := c.Get(lj.key); ok && cj != nil && cj.Job.JobModifyIndex == lj.state.JobModifyIndex {
			lj.allocs = cj.Stubs()
		}
	}
	return version, nil
}

// queueKey carries, in a reconcile's context, what the worker is told
// of the reconcile waiting in a queue (the write limiter): the stall
// detection does not count that time.
type queueKey struct{}

func withQueueNotice(ctx context.Context, f func(waiting bool)) context.Context {
	return context.WithValue(ctx, queueKey{}, f)
}

func queued(ctx context.Context, waiting bool) {
	if f, ok := ctx.Value(queueKey{}).(func(bool)); ok {
		f(waiting)
	}
}

// ErrTerminal marks a failure that retrying cannot fix (an invalid spec,
// a policy refusal); it is recorded in status and the key is not retried.
var ErrTerminal = errors.New("terminal")

// Reconcile reads the current state of key ("namespace/name") and acts.
// It is level-triggered: it does not care what changed, only how things
// are now, so running it twice is harmless.
func (r *Reconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" {
		return Result{}, fmt.Errorf("reconcile %q: %w: malformed key", key, ErrTerminal)
	}
	jobID := spec.JobIDPrefix + name
	rec, err := r.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		r.observed.Delete(key)
		return r.collect(ctx, ns, jobID)
	}
	if err != nil {
		return Result{}, fmt.Errorf("reconcile %q: %w", key, err)
	}
	if rec.Pool != nil {
		return r.syncPool(ctx, rec)
	}
	if rec.Deleting() {
		r.observed.Delete(key)
		return r.delete(ctx, rec, jobID)
	}
	res, err := r.sync(ctx, rec, jobID)
	if err == nil {
		r.observed.Store(key, rec.Generation)
	} else {
		r.observed.Delete(key)
	}
	return res, err
}

// Observed reports whether this reconciler has looked at the sandbox's
// current generation in Nomad and written what it saw: a status written
// before it started (by an earlier run of the controller, or under an
// earlier leader) may no longer hold.
func (r *Reconciler) Observed(key string, generation uint64) bool {
	g, ok := r.observed.Load(key)
	return ok && g.(uint64) == generation
}

// collect purges an owned job whose sandbox is no longer declared:
// garbage collection, only for jobs stamped with this store's ID.
func (r *Reconciler) collect(ctx context.Context, ns, jobID string) (Result, error) {
	if !r.gcAllowed.Load() {
		return Result{}, nil
	}
	key := ns + "/" + strings.TrimPrefix(jobID, spec.JobIDPrefix)
	if c := r.cfg.Cache; c != nil {
		if cj, ok := c.Get(key); ok && (cj == nil || r.ownership(cj.Job.Meta) != nomad.Owned) {
			return Result{}, nil // nothing of ours to collect
		}
	}
	// A purge is not undone: ownership is confirmed with Nomad itself.
	live, err := r.nomad.Job(ctx, ns, jobID)
	if errors.Is(err, nomad.ErrNotFound) {
		return Result{}, nil
	}
	if err != nil {
		return Result{}, err
	}
	if nomad.OwnerOf(live, r.cfg.Render.Owner) != nomad.Owned {
		return Result{}, nil
	}
	r.log.Info("purging job of an undeclared sandbox", "job_id", jobID, "namespace", ns)
	if err := r.beforeWrite(ctx); err != nil {
		return Result{}, err
	}
	if err := r.nomad.Purge(ctx, ns, jobID); err != nil {
		return Result{}, err
	}
	if c := r.cfg.Cache; c != nil {
		c.Gone(key)
	}
	return Result{}, nil
}

// delete purges the job of a sandbox marked for deletion, waits until
// Nomad no longer has it, then finalizes the record.
func (r *Reconciler) delete(ctx context.Context, rec store.Record, jobID string) (Result, error) {
	key, ns := rec.Key(), rec.Sandbox.Namespace
	lj, err := r.look(ctx, key, ns, jobID)
	if err != nil {
		return Result{}, err
	}
	if lj.state == nil {
		if err := r.store.Finalize(ctx, key, rec.ResourceVersion); err != nil && !errors.Is(err, store.ErrConflict) {
			return Result{}, fmt.Errorf("finalize %q: %w", key, err)
		}
		r.cfg.Metrics.setPhase(key, "")
		// A conflict means the sandbox was applied again meanwhile: the
		// change feed brings it back to a worker.
		return Result{}, nil
	}
	if own := r.ownership(lj.state.Meta); own != nomad.Owned {
		// Never purge what is not ours: forget the sandbox, keep the job.
		r.log.Warn("sandbox deleted; its job is not ours and is left alone", "sandbox", key, "job_id", jobID)
		if err := r.store.Finalize(ctx, key, rec.ResourceVersion); err != nil && !errors.Is(err, store.ErrConflict) {
			return Result{}, fmt.Errorf("finalize %q: %w", key, err)
		}
		r.cfg.Metrics.setPhase(key, "")
		return Result{}, nil
	}
	if why, behind := r.behindHold(rec, lj.state); behind {
		return r.conflict(ctx, key, r.baseStatus(rec, jobID), ReasonStoreBehind, why)
	}
	if err := r.beforeWrite(ctx); err != nil {
		return Result{}, err
	}
	if err := r.nomad.Purge(ctx, ns, jobID); err != nil {
		if c := r.cfg.Cache; c != nil {
			c.Invalidate(key)
		}
		return Result{}, err
	}
	if c := r.cfg.Cache; c != nil {
		c.Gone(key)
	}
	st := r.baseStatus(rec, jobID)
	st.Phase = store.PhaseDeleting
	st.Conditions = []store.Condition{
		{Type: CondSynced, Status: store.ConditionFalse, Reason: ReasonDeleting, Message: "Purging the Nomad job."},
		{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonDeleting, Message: "The sandbox is being deleted."},
	}
	r.writeStatus(ctx, key, st, store.Event{Type: store.EventNormal, Reason: store.ReasonPurged, Message: fmt.Sprintf("Purged Nomad job %s.", jobID)})
	return Result{RequeueAfter: r.cfg.PurgeRecheck}, nil
}

// sync makes the job of a declared sandbox match it.
func (r *Reconciler) sync(ctx context.Context, rec store.Record, jobID string) (Result, error) {
	key, sb := rec.Key(), rec.Sandbox
	st := r.baseStatus(rec, jobID)

	if err := r.cfg.CheckPolicy(&sb); err != nil {
		return r.terminal(ctx, rec, st, err)
	}
	desired, err := nomad.Render(&sb, r.cfg.Render)
	if err != nil {
		return r.terminal(ctx, rec, st, err)
	}

	lj, err := r.look(ctx, key, sb.Namespace, jobID)
	if err != nil {
		return r.nomadFailed(ctx, rec, st, err, false)
	}
	if lj.state != nil {
		switch r.ownership(lj.state.Meta) {
		case nomad.Foreign:
			return r.conflict(ctx, key, st, ReasonForeignJob, fmt.Sprintf("Nomad job %s exists but was not created by this controller (no %s in its Meta); it is left untouched. Remove or rename it, or rename the sandbox.", jobID, nomad.MetaOwner))
		case nomad.OtherOwner:
			return r.conflict(ctx, key, st, ReasonOtherOwner, fmt.Sprintf("Nomad job %s belongs to another controller (owner %s); it is left untouched.", jobID, lj.state.Meta[nomad.MetaOwner]))
		}
	}
	// Before anything is decided on the record (its expiry included):
	// under a hold, the record may be older than what runs.
	if why, behind := r.behindHold(rec, lj.state); behind {
		return r.conflict(ctx, key, st, ReasonStoreBehind, why)
	}

	var requeue time.Duration
	wantRunning := sb.Spec.State == spec.StateRunning
	if expiry, ok := expiresAt(rec); ok {
		if left := expiry.Sub(r.now()); left > 0 {
			requeue = left
		} else if sb.Spec.OnExpiry == spec.OnExpiryDelete || rec.Member.Claimed() {
			// A claimed sandbox's TTL deletes it: it never returns to
			// its pool.
			// On the version read: a re-apply since (a longer ttl) is a
			// new decision, which the change feed brings back.
			if _, err := r.store.DeleteAt(ctx, key, rec.ResourceVersion); errors.Is(err, store.ErrConflict) {
				return Result{}, nil
			} else if err != nil {
				return Result{}, fmt.Errorf("delete expired sandbox %q: %w", key, err)
			}
			r.appendEvent(ctx, key, store.Event{Type: store.EventNormal, Reason: store.ReasonDeleted, Message: fmt.Sprintf("Expired at %s; deleting.", expiry.UTC().Format(time.RFC3339))})
			return Result{}, nil // the change feed brings the deletion back
		} else {
			wantRunning = false
			st.Phase = store.PhaseExpired
		}
	}

	// observed: this generation was acted on before, so a write now
	// may undo a change made by someone else.
	observed := rec.Status.ObservedGeneration == rec.Generation
	var event *store.Event
	if !wantRunning {
		if lj.state != nil && !lj.state.Stop {
			if err := r.beforeWrite(ctx); err != nil {
				return Result{}, err
			}
			index, err := r.nomad.Stop(ctx, sb.Namespace, jobID)
			if err != nil {
				// It may have gone through: the index is unknown.
				st.JobModifyIndex = 0
				r.invalidate(key)
				return r.nomadFailed(ctx, rec, st, err, false)
			}
			if observed && (rec.Status.Phase == store.PhaseStopped || rec.Status.Phase == store.PhaseExpired) {
				// It was stopped, and someone started it again.
				r.cfg.Metrics.driftRepaired([]string{nomad.DriftRunning})
			}
			event = &store.Event{Type: store.EventNormal, Reason: "Stopped", Message: fmt.Sprintf("Stopped Nomad job %s.", jobID)}
			// A stop is a new version of the job, at the stop's index:
			// recorded, so that the next look does not take the
			// controller's own stop for someone else's change.
			stopped := *lj.state
			stopped.Stop, stopped.JobModifyIndex, stopped.ModifyIndex = true, index, index
			if stopped.VersionKnown {
				stopped.Version++
			}
			lj.state, lj.full, lj.cj = &stopped, nil, nil
			if c := r.cfg.Cache; c != nil {
				c.Wrote(key, stopped)
			}
		}
		if st.Phase == "" {
			st.Phase = store.PhaseStopped
		}
		why := "The sandbox is declared stopped."
		if st.Phase == store.PhaseExpired {
			why = "The sandbox expired and on_expiry is stop."
		}
		st.Conditions = []store.Condition{
			{Type: CondSynced, Status: store.ConditionTrue, Reason: ReasonStoppedState, Message: why},
			{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonStoppedState, Message: why},
		}
		if lj.state != nil {
			st.JobModifyIndex = lj.state.JobModifyIndex
		}
		r.writeStatus(ctx, key, st, eventsOf(event)...)
		r.release(key, st.JobModifyIndex)
		return Result{RequeueAfter: requeue}, nil
	}

	var reasons []string
	if lj.cached && lj.state != nil && observed && lj.state.JobModifyIndex == rec.Status.JobModifyIndex &&
		lj.state.Meta[nomad.MetaSpecHash] == rec.Hash && !lj.state.Stop &&
		!nomad.Dead(lj.state.Status, lj.state.JobModifyIndex, lj.state.ModifyIndex) {
		// The job is at the very index this controller recorded after
		// its own write or its last full look, and any change to its spec
		// moves that index: nothing to compare.
	} else {
		live, err := r.whole(ctx, lj)
		if err != nil {
			return r.nomadFailed(ctx, rec, st, err, false)
		}
		reasons = nomad.Drift(desired, live)
		if len(reasons) == 0 && observed && modifiedSince(rec.Status, live) {
			// Nothing the comparison knows of differs, yet the job was
			// written since this controller last wrote or saw it: a
			// change to a field it does not render. Registering the
			// rendering puts the whole job back.
			reasons = []string{nomad.DriftModified}
		}
	}
	if len(reasons) > 0 {
		index := uint64(0)
		if lj.state != nil {
			index = lj.state.JobModifyIndex
		}
		if err := r.beforeWrite(ctx); err != nil {
			return Result{}, err
		}
		res, err := r.nomad.Register(ctx, desired, index)
		if err != nil {
			if errors.Is(err, nomad.ErrInvalid) || errors.Is(err, nomad.ErrPermissionDenied) {
				// Nomad refused the job itself (a namespace that does not
				// exist, a token without the capability): retrying at once
				// cannot help, but an operator may fix it, so look again
				// later rather than never.
				return r.rejected(ctx, rec, st, err)
			}
			if !errors.Is(err, nomad.ErrConflict) {
				// The register may have gone through (a lost answer): the
				// job's index is unknown until the next look records it.
				st.JobModifyIndex = 0
			}
			// A conflict means someone wrote the job since it was read:
			// the retry reads it from Nomad.
			r.invalidate(key)
			return r.nomadFailed(ctx, rec, st, err, false)
		}
		if !res.Changed && len(reasons) == 1 && reasons[0] == nomad.DriftModified {
			// Nomad found the job as rendered: the index moved for a
			// change that was undone since, or was recorded by another
			// term. Nothing was repaired.
			reasons = nil
		}
		// A repair undoes a change made by someone else to a generation
		// already in Nomad: a job changed, stopped or purged behind the
		// controller's back. Registering a user's new generation is an
		// update, and the first register a create; neither is drift.
		repair := observed && (lj.state != nil && lj.state.Meta[nomad.MetaSpecHash] == rec.Hash || lj.state == nil && rec.Status.JobModifyIndex != 0)
		ev := store.Event{Type: store.EventNormal, Reason: store.ReasonCreated, Message: fmt.Sprintf("Registered Nomad job %s.", jobID)}
		switch {
		case len(reasons) == 0:
		case repair:
			r.cfg.Metrics.driftRepaired(reasons)
			ev.Reason = store.ReasonRepaired
			ev.Message = fmt.Sprintf("Registered Nomad job %s (%s).", jobID, strings.Join(reasons, ", "))
		case lj.state != nil:
			ev.Reason = store.ReasonUpdated
			ev.Message = fmt.Sprintf("Registered Nomad job %s (%s).", jobID, strings.Join(reasons, ", "))
		}
		if len(reasons) > 0 {
			event = &ev
		}
		if res.Changed {
			// A new version at the register's index: recorded without a
			// read, so that the next look neither writes again nor takes
			// the previous version's allocation for this one's.
			wrote := nomad.StateOf(desired)
			wrote.JobModifyIndex, wrote.ModifyIndex = res.Index, res.Index
			switch {
			case lj.state == nil:
				wrote.Version, wrote.VersionKnown = 0, true
			case lj.state.VersionKnown:
				wrote.Version, wrote.VersionKnown = lj.state.Version+1, true
			}
			if lj.state != nil {
				wrote.CreateIndex, wrote.Status = lj.state.CreateIndex, lj.state.Status
			}
			lj.state, lj.full, lj.cj = &wrote, nil, nil
			if c := r.cfg.Cache; c != nil {
				c.Wrote(key, wrote)
			} else {
				lj.loaded = false // read the allocations as they are now
			}
		}
	}
	st.JobModifyIndex = lj.state.JobModifyIndex
	// The same words whether this pass registered or found the job
	// matching, so that the next pass writes no status: the event says
	// what was done.
	synced := store.Condition{Type: CondSynced, Status: store.ConditionTrue, Reason: ReasonJobMatches, Message: "The Nomad job matches the spec."}

	version, err := r.version(ctx, lj, rec.Status)
	if err != nil {
		st.JobModifyIndex = 0
		return r.nomadFailed(ctx, rec, st, err, true, eventsOf(event)...)
	}
	allocs, err := r.allocations(ctx, lj)
	if err != nil {
		return r.nomadFailed(ctx, rec, st, err, true, eventsOf(event)...)
	}
	ready := r.observeAlloc(&st, allocs, version)
	if ready.Reason == ReasonNoAlloc {
		ready = r.whyUnplaced(ctx, rec, jobID, st.JobModifyIndex, ready)
	}
	st.Conditions = []store.Condition{synced, ready}
	r.writeStatus(ctx, key, st, eventsOf(event)...)
	r.release(key, st.JobModifyIndex)
	recheck := r.cfg.PendingRecheck
	if ready.Reason == ReasonNoAlloc {
		// Soon enough to say why, should Nomad not place it.
		recheck = min(recheck, unplacedAfter+time.Second)
	}
	if ready.Status != store.ConditionTrue && (requeue == 0 || requeue > recheck) {
		requeue = recheck
	}
	return Result{RequeueAfter: requeue}, nil
}

// invalidate makes the next look at key read Nomad.
func (r *Reconciler) invalidate(key string) {
	if c := r.cfg.Cache; c != nil {
		c.Invalidate(key)
	}
}

// release tells the cache the pass has looked at the job at index.
func (r *Reconciler) release(key string, index uint64) {
	if c := r.cfg.Cache; c != nil && index != 0 {
		c.Release(key, index)
	}
}

// observeAlloc fills phase, allocation, node and ports from the
// allocations Nomad wants running, and returns the Ready condition. Only
// an allocation of the job's current version proves the current spec
// runs: right after a register, the previous version's allocation still
// looks wanted and running for a moment (recorded on a real agent), and
// until Nomad has placed the new one the sandbox is Pending.
func (r *Reconciler) observeAlloc(st *store.Status, allocs []*api.AllocationListStub, version uint64) store.Condition {
	var cur, older *api.AllocationListStub
	for _, a := range allocs {
		if a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		if a.JobVersion == version {
			if cur == nil || a.CreateIndex > cur.CreateIndex {
				cur = a
			}
		} else if older == nil || a.CreateIndex > older.CreateIndex {
			older = a
		}
	}
	st.JobVersion = &version
	if cur == nil && older != nil {
		// What runs is an older version: say so, and which.
		st.Phase = store.PhasePending
		r.allocFields(st, older)
		runs := fmt.Sprintf("version %d", older.JobVersion)
		if older.JobVersion == nomad.UnknownVersion {
			runs, st.AllocJobVersion = "an earlier version", 0
		}
		return store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonVersionPending,
			Message: fmt.Sprintf("Nomad is placing version %d of the job; allocation %s still runs %s.", version, shortID(older.ID), runs)}
	}
	if cur == nil {
		st.Phase = store.PhasePending
		return store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonNoAlloc, Message: "Nomad has not placed an allocation yet."}
	}
	r.allocFields(st, cur)
	switch cur.ClientStatus {
	case api.AllocClientStatusRunning:
		st.Phase = store.PhaseRunning
		return store.Condition{Type: CondReady, Status: store.ConditionTrue, Reason: ReasonAllocRunning, Message: fmt.Sprintf("Allocation %s is running.", shortID(cur.ID))}
	case api.AllocClientStatusFailed, api.AllocClientStatusLost:
		st.Phase = store.PhaseFailed
		return store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonAllocFailed, Message: fmt.Sprintf("Allocation %s is %s; Nomad reschedules it.", shortID(cur.ID), cur.ClientStatus)}
	default:
		st.Phase = store.PhasePending
		return store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonAllocPending, Message: fmt.Sprintf("Allocation %s is %s.", shortID(cur.ID), cur.ClientStatus)}
	}
}

// allocFields records which allocation the status speaks of.
func (r *Reconciler) allocFields(st *store.Status, a *api.AllocationListStub) {
	st.AllocID, st.Node, st.AllocJobVersion = a.ID, a.NodeName, a.JobVersion
	if st.Node == "" {
		st.Node = a.NodeID
	}
	if a.AllocatedResources != nil {
		for _, n := range a.AllocatedResources.Shared.Networks {
			for _, p := range append(append([]api.Port(nil), n.ReservedPorts...), n.DynamicPorts...) {
				st.Ports = append(st.Ports, store.AllocatedPort{Label: p.Label, HostIP: n.IP, Value: p.Value, To: p.To})
			}
		}
	}
}

func (r *Reconciler) baseStatus(rec store.Record, jobID string) store.Status {
	return store.Status{ObservedGeneration: rec.Generation, JobID: jobID, JobModifyIndex: rec.Status.JobModifyIndex}
}

// modifiedSince reports whether live was written since the status
// recorded it: after this controller's own write it records the job's
// index, so any other index is a write it did not make. With no index
// recorded (a new store, a new leader) there is nothing to tell by.
func modifiedSince(st store.Status, live *api.Job) bool {
	return live != nil && st.JobModifyIndex != 0 && deref(live.JobModifyIndex) != st.JobModifyIndex
}

// CheckPolicy applies the controller's own limits on top of the spec's:
// they differ per cluster, so the spec package cannot know them. The API
// checks them at apply time too, so most refusals never reach the store.
func (cfg Config) CheckPolicy(sb *spec.Sandbox) error {
	allowed := cfg.AllowedDrivers
	if len(allowed) == 0 {
		allowed = []string{spec.DriverDocker, spec.DriverExec}
		if cfg.Render.AllowRawExec {
			allowed = append(allowed, spec.DriverRawExec)
		}
	}
	found := false
	for _, d := range allowed {
		found = found || d == sb.Spec.Driver
	}
	if !found {
		return &policyError{
			msg:   fmt.Sprintf("driver %q is not allowed by this controller (allowed: %s)", sb.Spec.Driver, strings.Join(allowed, ", ")),
			kinds: []error{ErrPolicy, nomad.ErrDriverNotAllowed},
		}
	}
	if cfg.MaxVCPUs > 0 && sb.Spec.VCPUs > cfg.MaxVCPUs {
		return &policyError{msg: fmt.Sprintf("vcpus %g is above this controller's ceiling of %g", sb.Spec.VCPUs, cfg.MaxVCPUs), kinds: []error{ErrPolicy}}
	}
	if cfg.MaxMemoryMB > 0 && sb.Spec.MemoryMB > cfg.MaxMemoryMB {
		return &policyError{msg: fmt.Sprintf("memory_mb %d is above this controller's ceiling of %d", sb.Spec.MemoryMB, cfg.MaxMemoryMB), kinds: []error{ErrPolicy}}
	}
	return nil
}

// ErrPolicy is a refusal by the controller's configuration.
var ErrPolicy = errors.New("refused by policy")

// policyError says what rule refused a sandbox in one sentence, while
// errors.Is still finds its kinds (ErrPolicy, nomad.ErrDriverNotAllowed).
type policyError struct {
	msg   string
	kinds []error
}

func (e *policyError) Error() string   { return e.msg }
func (e *policyError) Unwrap() []error { return e.kinds }

// terminal records a failure that retrying cannot fix and does not retry.
func (r *Reconciler) terminal(ctx context.Context, rec store.Record, st store.Status, err error) (Result, error) {
	st.Phase = store.PhaseFailed
	st.LastError = err.Error()
	st.Conditions = []store.Condition{
		{Type: CondSynced, Status: store.ConditionFalse, Reason: ReasonPolicy, Message: err.Error()},
		{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonPolicy, Message: "The sandbox cannot be run as declared."},
	}
	r.writeStatus(ctx, rec.Key(), st, store.Event{Type: store.EventWarning, Reason: store.ReasonFailed, Message: err.Error()})
	return Result{}, nil
}

// rejected records that Nomad refused the job and looks again after
// RejectedRecheck.
func (r *Reconciler) rejected(ctx context.Context, rec store.Record, st store.Status, err error) (Result, error) {
	st.Phase = store.PhaseFailed
	st.LastError = err.Error()
	next := r.now().Add(r.cfg.RejectedRecheck).UTC().Truncate(time.Second)
	st.NextAttemptAt = &next
	st.Conditions = []store.Condition{
		{Type: CondSynced, Status: store.ConditionFalse, Reason: ReasonNomadRejected, Message: err.Error()},
		{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonNomadRejected, Message: fmt.Sprintf(
			"Nomad refused the sandbox's job; the controller tries again every %s (status.nextAttemptAt), or now with `akctl reconcile -n %s %s` once the cause is fixed.",
			r.cfg.RejectedRecheck, rec.Sandbox.Namespace, rec.Sandbox.Name)},
	}
	r.writeStatus(ctx, rec.Key(), st, store.Event{Type: store.EventWarning, Reason: store.ReasonFailed, Message: err.Error()})
	return Result{RequeueAfter: r.cfg.RejectedRecheck}, nil
}

func (r *Reconciler) conflict(ctx context.Context, key string, st store.Status, reason, msg string) (Result, error) {
	st.Phase = store.PhaseConflict
	ready := "The sandbox's job name is taken."
	if reason == ReasonStoreBehind {
		ready = "The job runs another spec than the store's."
	}
	st.Conditions = []store.Condition{
		{Type: CondSynced, Status: store.ConditionFalse, Reason: reason, Message: msg},
		{Type: CondReady, Status: store.ConditionFalse, Reason: reason, Message: ready},
	}
	r.writeStatus(ctx, key, st, store.Event{Type: store.EventWarning, Reason: store.ReasonConflict, Message: msg})
	return Result{}, nil
}

// nomadFailed records a Nomad failure in status and returns it, so the
// worker retries with backoff. acted says whether this pass got the
// record's generation into Nomad (or found it there) before the failure:
// only then does the status say it observed that generation. Otherwise
// the observed generation stays where it was, and Ready is not claimed
// for a generation Nomad has never seen.
func (r *Reconciler) nomadFailed(ctx context.Context, rec store.Record, st store.Status, err error, acted bool, events ...store.Event) (Result, error) {
	key := rec.Key()
	prev := rec.Status
	if cur, gerr := r.store.Get(ctx, key); gerr == nil {
		prev = cur.Status
	}
	st.Phase = prev.Phase
	if st.Phase == "" {
		st.Phase = store.PhasePending
	}
	st.LastError = err.Error()
	st.AllocID, st.Node, st.Ports = prev.AllocID, prev.Node, prev.Ports
	st.Conditions = []store.Condition{{Type: CondSynced, Status: store.ConditionUnknown, Reason: ReasonNomadError, Message: err.Error()}}
	if !acted {
		st.ObservedGeneration = min(prev.ObservedGeneration, rec.Generation)
	}
	// wrote: this pass wrote the job (events say what), so whatever was
	// seen of its allocation before no longer holds.
	wrote := len(events) > 0
	ready, ok := prev.Condition(CondReady)
	switch {
	case st.ObservedGeneration < rec.Generation:
		// Whatever runs is an older generation.
		st.Conditions = append(st.Conditions, store.Condition{Type: CondReady, Status: store.ConditionUnknown, Reason: ReasonNomadError,
			Message: fmt.Sprintf("Generation %d has not reached Nomad yet; the controller retries.", rec.Generation)})
	case ok && !wrote:
		st.Conditions = append(st.Conditions, ready)
	case wrote:
		st.Phase = store.PhasePending
		st.Conditions = append(st.Conditions, store.Condition{Type: CondReady, Status: store.ConditionUnknown, Reason: ReasonNomadError,
			Message: "The job was written; its allocation could not be read yet."})
	default:
		st.Conditions = append(st.Conditions, store.Condition{Type: CondReady, Status: store.ConditionUnknown, Reason: ReasonNomadError,
			Message: "Nomad could not be read."})
	}
	r.writeStatus(ctx, key, st, events...)
	return Result{}, err
}

// writeStatus records status; a failure is logged, not returned: the next
// reconcile computes it again.
func (r *Reconciler) writeStatus(ctx context.Context, key string, st store.Status, events ...store.Event) {
	r.cfg.Metrics.setPhase(key, st.Phase)
	err := r.store.UpdateStatus(ctx, key, st, events...)
	switch {
	case err == nil, errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrStaleStatus):
		// Finalized meanwhile, or a newer generation already reported.
	default:
		r.log.Warn("write status", "sandbox", key, "err", err)
	}
}

func (r *Reconciler) appendEvent(ctx context.Context, key string, ev store.Event) {
	if err := r.store.AppendEvent(ctx, key, ev); err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Debug("append event", "sandbox", key, "err", err)
	}
}

// expiresAt is when a sandbox expires: expires_at, or its creation plus
// ttl.
func expiresAt(rec store.Record) (time.Time, bool) {
	if m := rec.Member; m != nil && m.ExpiresAt != nil {
		return *m.ExpiresAt, true
	}
	sp := rec.Sandbox.Spec
	if sp.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, sp.ExpiresAt)
		return t, err == nil
	}
	if sp.TTL != "" {
		d, err := time.ParseDuration(sp.TTL)
		return rec.CreatedAt.Add(d), err == nil
	}
	return time.Time{}, false
}

func eventsOf(e *store.Event) []store.Event {
	if e == nil {
		return nil
	}
	return []store.Event{*e}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
