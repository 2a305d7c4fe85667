package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Object is one sandbox of an apply.
type Object struct {
	Sandbox spec.Sandbox
	// ExpectedResourceVersion, when not zero, must equal the stored
	// record's resource version or the whole apply fails with
	// ErrConflict. Zero skips the check.
	ExpectedResourceVersion uint64
	// Pool, when set, makes the object a pool: Sandbox holds its
	// identity, labels and template.
	Pool *spec.PoolSettings
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// DryRun computes the results without writing anything.
	DryRun bool
	// ExpectedRevision, when not zero, must equal the store's revision or
	// the whole apply fails with ErrConflict. Zero skips the check.
	ExpectedRevision uint64
	// ApplySet is recorded on every object of the batch and scopes Prune.
	ApplySet string
	// Prune marks for deletion, in the same transaction, the records the
	// batch does not hold among those of ApplySet (when set) that match
	// PruneSelector (when set). At least one of the two is required.
	Prune         bool
	PruneSelector Selector
}

// Action is what an apply did to one record.
type Action string

const (
	ActionCreated    Action = "created"
	ActionConfigured Action = "configured"
	ActionUnchanged  Action = "unchanged"
	ActionPruned     Action = "pruned"
)

// ObjectResult is the outcome for one record.
type ObjectResult struct {
	Key    string
	Action Action
	// Pool is set when the record is a pool.
	Pool            bool
	Generation      uint64
	ResourceVersion uint64
}

// ApplyResult is the outcome of one apply.
type ApplyResult struct {
	// Revision is the store revision after the apply: the new one if it
	// wrote anything (or, in a dry run, would have), else the current one.
	Revision uint64
	// Objects holds the batch's objects in batch order, then the pruned
	// records sorted by key.
	Objects []ObjectResult
}

// Changed reports whether the apply wrote (or in a dry run, would write)
// anything.
func (r ApplyResult) Changed() bool {
	for _, o := range r.Objects {
		if o.Action != ActionUnchanged {
			return true
		}
	}
	return false
}

// Apply stores a batch of declarations in one transaction: all or nothing.
//
// An object is unchanged when its spec hash, labels and apply set equal the
// stored record's and the record is not marked for deletion; unchanged
// objects are not written. A change of source position alone is unchanged
// too, so re-applying the same files from another checkout does not churn;
// the stored source then still points at the earlier location.
//
// The generation starts at 1 and grows only when the spec's hash changes,
// or when the object was marked for deletion (the mark is cleared, and the
// new generation tells the reconciler to create the job again). Every
// record written gets the apply's revision as resource version.
func (s *Store) Apply(ctx context.Context, objs []Object, opts ApplyOptions) (ApplyResult, error) {
	if err := validateApply(objs, opts); err != nil {
		return ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	var res ApplyResult
	if opts.DryRun {
		if err := ctx.Err(); err != nil {
			return ApplyResult{}, fmt.Errorf("apply: %w", err)
		}
		err := s.view(func(tx *bolt.Tx) error {
			w := &writeTx{tx: tx, rev: revisionImpl(tx) + 1, now: s.now().UTC()}
			var err error
			res, err = applyImpl(w, objs, opts, true)
			res.Revision = w.rev
			if len(w.changes) == 0 {
				res.Revision = w.rev - 1
			}
			return err
		})
		if err != nil {
			return ApplyResult{}, fmt.Errorf("apply (dry run): %w", err)
		}
		return res, nil
	}
	rev, err := s.update(ctx, func(w *writeTx) error {
		var err error
		res, err = applyImpl(w, objs, opts, false)
		return err
	})
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	res.Revision = rev
	s.log.Debug("applied", "revision", rev, "objects", len(objs), "changed", res.Changed())
	return res, nil
}

func validateApply(objs []Object, opts ApplyOptions) error {
	if opts.Prune && opts.ApplySet == "" && opts.PruneSelector.Empty() {
		return fmt.Errorf("prune needs an apply set or a selector; without either it would delete every sandbox")
	}
	seen := make(map[string]bool, len(objs))
	for i := range objs {
		sb := &objs[i].Sandbox
		if err := checkKey(sb.Namespace, sb.Name); err != nil {
			return err
		}
		if seen[sb.Key()] {
			return fmt.Errorf("sandbox %q appears more than once in the batch", sb.Key())
		}
		seen[sb.Key()] = true
	}
	return nil
}

// applyImpl computes, and unless dryRun writes, one apply inside w.
func applyImpl(w *writeTx, objs []Object, opts ApplyOptions, dryRun bool) (ApplyResult, error) {
	if opts.ExpectedRevision != 0 {
		if cur := w.rev - 1; cur != opts.ExpectedRevision {
			return ApplyResult{}, fmt.Errorf("expected store revision %d, found %d: %w", opts.ExpectedRevision, cur, ErrConflict)
		}
	}
	res := ApplyResult{Objects: make([]ObjectResult, 0, len(objs))}
	inBatch := make(map[string]bool, len(objs))
	for i := range objs {
		obj := &objs[i]
		key := obj.Sandbox.Key()
		inBatch[key] = true
		raw := w.tx.Bucket(bucketSandboxes).Get([]byte(key))
		found := raw != nil
		var old sandboxHeader
		if found {
			if err := json.Unmarshal(raw, &old); err != nil {
				return ApplyResult{}, fmt.Errorf("decode sandbox %q: %w", key, err)
			}
		}
		if obj.ExpectedResourceVersion != 0 {
			switch {
			case !found:
				return ApplyResult{}, fmt.Errorf("sandbox %q: expected resource version %d, found no record: %w",
					key, obj.ExpectedResourceVersion, ErrConflict)
			case old.ResourceVersion != obj.ExpectedResourceVersion:
				return ApplyResult{}, fmt.Errorf("sandbox %q: expected resource version %d, found %d: %w",
					key, obj.ExpectedResourceVersion, old.ResourceVersion, ErrConflict)
			}
		}
		hash := obj.Sandbox.Spec.Hash()
		if obj.Pool != nil {
			hash = spec.PoolHash(obj.Sandbox.Spec, *obj.Pool)
		}
		if found {
			if err := kindConflict(key, &old, obj.Pool != nil); err != nil {
				return ApplyResult{}, err
			}
		}
		var e sandboxEntry
		var action Action
		switch {
		case !found:
			action = ActionCreated
			e = sandboxEntry{Declaration: Declaration{Generation: 1, CreatedAt: w.now}}
		case old.DeletionRequestedAt == nil && old.Hash == hash &&
			labelsEqual(old.Sandbox.Labels, obj.Sandbox.Labels) && old.ApplySet == opts.ApplySet:
			res.Objects = append(res.Objects, ObjectResult{
				Key: key, Action: ActionUnchanged, Generation: old.Generation, ResourceVersion: old.ResourceVersion, Pool: obj.Pool != nil,
			})
			continue
		default:
			action = ActionConfigured
			// Generation and CreatedAt carry over; every other field of
			// the entry is rewritten below.
			e = sandboxEntry{Declaration: Declaration{Generation: old.Generation, CreatedAt: old.CreatedAt}, PastHashes: old.PastHashes}
			if old.Hash != hash || old.DeletionRequestedAt != nil {
				e.Generation++
			}
			if old.Hash != hash {
				e.PastHashes = append(slices.Clone(old.PastHashes), old.Hash)
				if n := len(e.PastHashes); n > maxPastHashes {
					e.PastHashes = e.PastHashes[n-maxPastHashes:]
				}
			}
		}
		e.Sandbox = obj.Sandbox
		e.Sandbox.Source = spec.Source{}
		e.Source = obj.Sandbox.Source
		e.Hash = hash
		e.ApplySet = opts.ApplySet
		e.ResourceVersion = w.rev
		e.UpdatedAt = w.now
		e.DeletionRequestedAt = nil
		e.Pool = obj.Pool
		if !dryRun {
			if err := putSandboxImpl(w.tx, &e); err != nil {
				return ApplyResult{}, err
			}
		}
		w.record(ChangeSpec, key, e.Generation)
		res.Objects = append(res.Objects, ObjectResult{
			Key: key, Action: action, Generation: e.Generation, ResourceVersion: e.ResourceVersion, Pool: obj.Pool != nil,
		})
	}
	if opts.Prune {
		pruned, err := pruneImpl(w, inBatch, opts, dryRun)
		if err != nil {
			return ApplyResult{}, err
		}
		res.Objects = append(res.Objects, pruned...)
	}
	return res, nil
}

// pruneImpl marks for deletion the records of the apply set (and selector)
// that the batch no longer holds. Records already marked are left alone.
func pruneImpl(w *writeTx, inBatch map[string]bool, opts ApplyOptions, dryRun bool) ([]ObjectResult, error) {
	var (
		out    []ObjectResult
		marked []sandboxEntry
	)
	c := w.tx.Bucket(bucketSandboxes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if inBatch[string(k)] {
			continue
		}
		e, err := decodeSandbox(k, v)
		if err != nil {
			return nil, err
		}
		// A pool's sandboxes are its own: pruning the pool removes them.
		if e.DeletionRequestedAt != nil || e.Member != nil ||
			(opts.ApplySet != "" && e.ApplySet != opts.ApplySet) ||
			!opts.PruneSelector.Matches(e.Sandbox.Labels) {
			continue
		}
		marked = append(marked, e)
	}
	// Writes wait until the scan is over: bbolt cursors must not see the
	// bucket change under them.
	for i := range marked {
		e := &marked[i]
		markDeletedImpl(w, e)
		if !dryRun {
			if err := putSandboxImpl(w.tx, e); err != nil {
				return nil, err
			}
		}
		out = append(out, ObjectResult{
			Key: e.Sandbox.Key(), Action: ActionPruned, Generation: e.Generation, ResourceVersion: e.ResourceVersion, Pool: e.Pool != nil,
		})
	}
	return out, nil
}

// kindConflict refuses an apply that would turn a sandbox into a pool or
// back, or overwrite a pool's sandbox: the name is taken.
func kindConflict(key string, old *sandboxHeader, pool bool) error {
	switch {
	case old.Member != nil:
		return fmt.Errorf("%q is a sandbox of pool %q, which manages it; give the declaration another name: %w",
			key, old.Member.Pool, ErrNameTaken)
	case pool && old.Pool == nil:
		return fmt.Errorf("%q is a sandbox; a pool cannot take its name: %w", key, ErrNameTaken)
	case !pool && old.Pool != nil:
		return fmt.Errorf("%q is a pool; a sandbox cannot take its name: %w", key, ErrNameTaken)
	}
	return nil
}
