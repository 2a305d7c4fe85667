package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// unplacedAfter is how long a sandbox's current version may go without an
// allocation before the controller asks Nomad why: a real agent places one
// within tens of milliseconds of the register.
const unplacedAfter = 5 * time.Second

// evaluationReader is the Nomad client's, when it can list evaluations.
type evaluationReader interface {
	Evaluations(ctx context.Context, ns, id string) ([]*api.Evaluation, error)
}

// whyUnplaced turns "no allocation yet", when it has lasted unplacedAfter
// for this generation, into Nomad's reason: the newest evaluation of the
// current version that failed to place, with what filtered or exhausted
// the nodes (fact 68: an unknown driver leaves a blocked evaluation with
// "missing drivers"). Otherwise, or when Nomad cannot be asked, noAlloc
// stands.
func (r *Reconciler) whyUnplaced(ctx context.Context, rec store.Record, jobID string, jobModifyIndex uint64, noAlloc store.Condition) store.Condition {
	prev, ok := rec.Status.Condition(CondReady)
	if !ok || (prev.Reason != ReasonNoAlloc && prev.Reason != ReasonUnplaceable) ||
		rec.Status.ObservedGeneration != rec.Generation || r.now().Sub(rec.Status.UpdatedAt) < unplacedAfter {
		return noAlloc
	}
	er, ok := r.nomad.(evaluationReader)
	if !ok {
		return noAlloc
	}
	evals, err := er.Evaluations(ctx, rec.Sandbox.Namespace, jobID)
	if err != nil {
		r.log.Debug("list evaluations", "sandbox", rec.Key(), "err", err)
		return noAlloc
	}
	var newest *api.Evaluation
	for _, e := range evals {
		if len(e.FailedTGAllocs) == 0 || e.JobModifyIndex < jobModifyIndex {
			continue
		}
		if newest == nil || e.CreateIndex > newest.CreateIndex {
			newest = e
		}
	}
	if newest == nil {
		return noAlloc
	}
	return store.Condition{Type: CondReady, Status: store.ConditionFalse, Reason: ReasonUnplaceable,
		Message: fmt.Sprintf("Nomad cannot place it: %s. It places it once a node can take it (evaluation %s is %s).",
			placementFailure(newest.FailedTGAllocs), shortID(newest.ID), newest.Status)}
}

// placementFailure says, per task group, what Nomad's metric counted.
func placementFailure(failed map[string]*api.AllocationMetric) string {
	var parts []string
	for _, g := range slices.Sorted(maps.Keys(failed)) {
		m := failed[g]
		if m == nil {
			continue
		}
		var why []string
		for _, k := range slices.Sorted(maps.Keys(m.ConstraintFiltered)) {
			why = append(why, fmt.Sprintf("%s on %d", k, m.ConstraintFiltered[k]))
		}
		for _, k := range slices.Sorted(maps.Keys(m.ClassFiltered)) {
			why = append(why, fmt.Sprintf("class %s filtered on %d", k, m.ClassFiltered[k]))
		}
		for _, k := range slices.Sorted(maps.Keys(m.DimensionExhausted)) {
			why = append(why, fmt.Sprintf("%s exhausted on %d", k, m.DimensionExhausted[k]))
		}
		if len(why) == 0 {
			why = append(why, "no node fits")
		}
		parts = append(parts, fmt.Sprintf("group %s: %d of %d nodes evaluated filtered out (%s)",
			g, m.NodesFiltered+m.NodesExhausted, m.NodesEvaluated, strings.Join(why, ", ")))
	}
	if len(parts) == 0 {
		return "no node fits"
	}
	return strings.Join(parts, "; ")
}
