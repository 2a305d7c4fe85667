package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Pool conditions and reasons.
const (
	// CondExhausted is True while max keeps the pool below size.
	CondExhausted    = "Exhausted"
	ReasonMaxReached = "MaxReached"
	ReasonFilled     = "Filled"
	ReasonFilling    = "Filling"
	ReasonBelowMax   = "BelowMax"
)

// syncPool keeps a pool's sandboxes as declared (store.SyncPool does it
// in one store transaction; the sandboxes it creates or deletes come
// back through the change feed and are run like any other) and writes
// the pool's status.
func (r *Reconciler) syncPool(ctx context.Context, rec store.Record) (Result, error) {
	key := rec.Key()
	r.pools.Store(key, true)
	ps, err := r.store.SyncPool(ctx, key)
	if err != nil {
		return Result{}, err
	}
	r.cfg.Metrics.setPool(key, ps)
	if !ps.Found || ps.Finalized {
		r.pools.Delete(key)
		r.cfg.Metrics.setPool(key, store.PoolState{})
		return Result{}, nil
	}
	if len(ps.Created) > 0 || len(ps.Deleted) > 0 {
		r.log.Info("pool synced", "pool", key, "created", len(ps.Created), "deleted", len(ps.Deleted),
			"ready", ps.Ready, "pending", ps.Pending, "claimed", ps.Claimed)
	}
	st := store.Status{ObservedGeneration: rec.Generation,
		Pool: &store.PoolCounts{Ready: ps.Ready, Pending: ps.Pending, Claimed: ps.Claimed}}
	size := ps.Settings.Size
	ready := store.Condition{Type: CondReady, Status: store.ConditionTrue, Reason: ReasonFilled,
		Message: fmt.Sprintf("%d of %d sandboxes wait Ready.", ps.Ready, size)}
	switch {
	case ps.Deleting:
		st.Phase = store.PhaseDeleting
		ready = store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: store.ReasonDeleted,
			Message: "The pool is being deleted: its unclaimed sandboxes go first; claimed ones stay."}
	case ps.Ready >= size:
		st.Phase = store.PhaseRunning
	default:
		st.Phase = store.PhasePending
		ready.Status, ready.Reason = store.ConditionFalse, ReasonFilling
	}
	exhausted := store.Condition{Type: CondExhausted, Status: store.ConditionFalse, Reason: ReasonBelowMax}
	if ps.Exhausted {
		exhausted = store.Condition{Type: CondExhausted, Status: store.ConditionTrue, Reason: ReasonMaxReached,
			Message: fmt.Sprintf("max is %d, with %d sandboxes claimed and %d on their way out: the pool cannot keep %d waiting until some are gone.",
				ps.Settings.Max, ps.Claimed, ps.Stopping, size)}
	}
	st.Conditions = []store.Condition{ready, exhausted}
	// Not writeStatus: a pool is not a sandbox, for the phase metric. An
	// unchanged status is not written (UpdateStatus compares).
	if err := r.store.UpdateStatus(ctx, key, st); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrStaleStatus) {
		r.log.Warn("write pool status", "pool", key, "err", err)
	}
	return Result{}, nil
}

// PoolOf names the pool whose sandbox key may be ("ns/<pool>-<suffix>"),
// when a pool of that name has been synced: a change of the sandbox is
// one for the pool too.
func (r *Reconciler) PoolOf(key string) (string, bool) {
	n := len(key) - spec.PoolSuffixLength - 1
	if n <= 0 || key[n] != '-' || !strings.Contains(key[:n], "/") {
		return "", false
	}
	pool := key[:n]
	_, ok := r.pools.Load(pool)
	return pool, ok
}
