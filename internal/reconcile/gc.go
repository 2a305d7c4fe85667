package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Garbage collection purges owned jobs whose sandbox the store does not
// declare. Deletes purge before they finalize, so in normal running there
// is no such job: one shows up when the store lost what it held (an empty
// or replaced data dir) or is older than what was applied (a restored
// backup). Purging then destroys what users declared, so collection is
// refused until an operator confirms the store.

// maxHoldJobs bounds the job names a hold keeps as examples.
const maxHoldJobs = 10

// ErrNothingToConfirm: garbage collection is on already.
var ErrNothingToConfirm = errors.New("garbage collection is not held")

// ErrCannotConfirm: garbage collection is off for a reason a confirmation
// cannot lift (an incomplete replicated copy).
var ErrCannotConfirm = errors.New("garbage collection cannot be confirmed here")

// decideGC decides, once the initial list of owned jobs is in, whether
// this run collects garbage.
func (c *Controller) decideGC(ctx context.Context, owned []*api.JobListStub, declared []store.Record) error {
	o := c.o
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	c.owned = c.owned[:0]
	for _, s := range owned {
		if key, ok := jobKey(s); ok {
			c.owned = append(c.owned, key)
		}
		c.ownedIndex = max(c.ownedIndex, s.JobModifyIndex, s.CreateIndex)
	}
	if o.DisableGC {
		c.gc = GCState{Reason: "The replicated copy of the desired state is not known to be whole (a seeding was interrupted); garbage collection stays off until its seeder finishes it."}
		o.Logger.Warn("garbage collection is off for this run: the desired state is not known to be whole")
		return nil
	}
	var hold *store.GCHold
	if o.GCHolds != nil {
		h, held, err := o.GCHolds.GCHeld(ctx)
		if err != nil {
			return fmt.Errorf("read the garbage collection hold: %w", err)
		}
		if held {
			hold = &h
		}
	}
	if hold == nil {
		h, err := c.checkStore(ctx, owned, declared)
		if err != nil {
			return err
		}
		if h != nil && o.GCHolds != nil {
			recorded, err := o.GCHolds.HoldGC(ctx, *h)
			if err != nil {
				return fmt.Errorf("record the garbage collection hold: %w", err)
			}
			h = &recorded
		}
		hold = h
	}
	if hold != nil {
		c.gc = GCState{Reason: hold.Reason, Hold: hold}
		o.Reconciler.holdAt(hold)
		o.Logger.Error("garbage collection is held: no owned job without a sandbox is purged, and no job running a newer spec than the store's is reverted, until an operator confirms this store (akctl gc confirm)",
			"reason", hold.Reason, "since", hold.Since, "jobs", hold.JobCount, "examples", strings.Join(hold.Jobs, ", "), "owner", o.Owner)
		o.Metrics.gcRefused()
		return nil
	}
	c.gc = GCState{Enabled: true}
	o.Reconciler.AllowGC()
	return nil
}

// checkStore looks for the signs of a store that lost or never had what
// was applied: no sandbox at all beside owned jobs, or owned jobs written
// after the newest Nomad state the store recorded.
func (c *Controller) checkStore(ctx context.Context, owned []*api.JobListStub, declared []store.Record) (*store.GCHold, error) {
	o := c.o
	if len(owned) == 0 {
		return nil, nil
	}
	if len(declared) == 0 {
		// Not a user who deleted everything: deletes purge before they
		// finalize.
		h := &store.GCHold{
			Reason:   fmt.Sprintf("The store declares no sandbox, but Nomad runs %d jobs this controller owns: a lost or wrong data dir. Restore the data dir from a backup (with -ha, check the replicated copy under the variable prefix), or confirm to purge them.", len(owned)),
			JobCount: len(owned),
		}
		for _, s := range owned {
			if len(h.Jobs) < maxHoldJobs {
				h.Jobs = append(h.Jobs, s.Namespace+"/"+s.ID)
			}
		}
		return h, nil
	}
	if o.GCHolds == nil {
		return nil, nil
	}
	known, err := o.GCHolds.NomadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the store's nomad index: %w", err)
	}
	recs := make(map[string]store.Record, len(declared))
	for _, r := range declared {
		recs[r.Key()] = r
	}
	var newer []string
	for _, s := range owned {
		key, ok := jobKey(s)
		if !ok {
			continue
		}
		rec, declared := recs[key]
		switch {
		case !declared && s.CreateIndex > known:
			// Created after the store's last look: by a store that held
			// a sandbox this one does not.
		case declared && !knownSpec(rec, s.Meta[nomad.MetaSpecHash]) && s.JobModifyIndex > known:
			// Registered after the store's last look with a spec the
			// store never declared. (A spec it declared before is its
			// own write whose status a crash lost, or a revert.)
		case declared && rec.Deleting() && rec.Status.JobModifyIndex != 0 && s.CreateIndex > rec.Status.JobModifyIndex:
			// Marked for deletion here, but the job is not the one the
			// store recorded: created again, by a store that knew more.
		default:
			continue
		}
		newer = append(newer, s.Namespace+"/"+s.ID)
	}
	if len(newer) == 0 {
		return nil, nil
	}
	slices.Sort(newer)
	h := &store.GCHold{
		Reason: fmt.Sprintf("The store is behind the jobs it owns: %d of them were written after the newest Nomad state it recorded (index %d), so it looks restored from an older backup. Apply the current declarations, then confirm this store to purge what it does not declare.",
			len(newer), known),
		NomadIndex: known,
		Jobs:       newer[:min(len(newer), maxHoldJobs)],
		JobCount:   len(newer),
	}
	return h, nil
}

// knownSpec reports whether hash is a spec rec declares or once declared.
func knownSpec(rec store.Record, hash string) bool {
	return hash == rec.Hash || slices.Contains(rec.PastHashes, hash)
}

// GCState reports whether garbage collection is on.
func (c *Controller) GCState() GCState {
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	return c.gc
}

// ConfirmGC is an operator's word that the store is the desired state:
// the hold is released (recorded so, when the store keeps holds), garbage
// collection turns on, and every owned job is looked at again, so that the
// jobs the store does not declare are purged now.
func (c *Controller) ConfirmGC(ctx context.Context) (GCState, error) {
	o := c.o
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	switch {
	case !c.initialList.Load():
		return c.gc, fmt.Errorf("%w: the initial list of owned jobs is not done yet", ErrCannotConfirm)
	case c.gc.Enabled:
		return c.gc, ErrNothingToConfirm
	case c.gc.Hold == nil:
		return c.gc, fmt.Errorf("%w: %s", ErrCannotConfirm, c.gc.Reason)
	}
	if o.GCHolds != nil {
		if err := o.GCHolds.ReleaseGC(ctx, c.ownedIndex); err != nil {
			return c.gc, err
		}
	}
	o.Logger.Warn("garbage collection confirmed by an operator: purging owned jobs the store does not declare", "reason_was", c.gc.Reason)
	c.gc = GCState{Enabled: true}
	o.Reconciler.holdAt(nil)
	o.Reconciler.AllowGC()
	for _, key := range c.owned {
		o.Queue.Add(key)
	}
	return c.gc, nil
}
