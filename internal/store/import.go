package store

import (
	"context"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Declaration is the declared part of a record: what a user applied and
// the store's bookkeeping of it, without the local resource version and
// without the observed status. The store keeps it as it is, beside the
// resource version (sandboxEntry). It is what other instances of the
// controller need to rebuild the record, and what Import takes.
type Declaration struct {
	Sandbox             spec.Sandbox `json:"sandbox"`
	Source              spec.Source  `json:"source"`
	Hash                string       `json:"hash"`
	ApplySet            string       `json:"applySet,omitempty"`
	Generation          uint64       `json:"generation"`
	CreatedAt           time.Time    `json:"createdAt"`
	UpdatedAt           time.Time    `json:"updatedAt"`
	DeletionRequestedAt *time.Time   `json:"deletionRequestedAt,omitempty"`
	// Pool, when set, makes the record a pool: Sandbox holds the pool's
	// identity and labels, and its template as the spec.
	Pool *spec.PoolSettings `json:"pool,omitempty"`
	// Member, when set, makes the record a sandbox of a pool.
	Member *Member `json:"member,omitempty"`
}

// Key is the declaration's "namespace/name".
func (d Declaration) Key() string { return d.Sandbox.Key() }

// Declaration returns the record's declared part.
func (r Record) Declaration() Declaration {
	sb := r.Sandbox
	src := sb.Source
	sb.Source = spec.Source{}
	return Declaration{
		Sandbox:             sb,
		Source:              src,
		Hash:                r.Hash,
		ApplySet:            r.ApplySet,
		Generation:          r.Generation,
		CreatedAt:           r.CreatedAt,
		UpdatedAt:           r.UpdatedAt,
		DeletionRequestedAt: r.DeletionRequestedAt,
		Pool:                r.Pool,
		Member:              r.Member,
	}
}

// Same reports whether two declarations declare the same thing: the same
// spec, labels, apply set, generation and deletion mark. Timestamps and
// source positions are bookkeeping and are not compared.
func (d Declaration) Same(o Declaration) bool {
	return d.Key() == o.Key() && d.Hash == o.Hash && d.Generation == o.Generation &&
		d.ApplySet == o.ApplySet && labelsEqual(d.Sandbox.Labels, o.Sandbox.Labels) &&
		(d.DeletionRequestedAt == nil) == (o.DeletionRequestedAt == nil) &&
		(d.Pool == nil) == (o.Pool == nil) && d.Member.same(o.Member)
}

// ImportOptions tune Import.
type ImportOptions struct {
	// RemoveMissing removes, with their status and events, the records
	// the batch does not hold: the batch is then the whole desired state.
	RemoveMissing bool
	// Remove removes these keys, with their status and events, when the
	// store holds them and the batch does not: the keys a copy lost since
	// the last import. RemoveMissing covers them already.
	Remove []string
}

// ImportResult counts what an import did.
type ImportResult struct {
	Revision                             uint64
	Created, Updated, Removed, Unchanged int
}

// Changed reports whether the import wrote anything.
func (r ImportResult) Changed() bool { return r.Created+r.Updated+r.Removed > 0 }

// Import makes the store hold exactly the given declarations, generation
// and deletion mark included, in one transaction: all or nothing. It is
// how an instance brings its store up to date from a replicated copy, so,
// unlike Apply, it does not compute generations: it takes them. Records
// whose declaration is the same are left alone, status included; written
// ones get the import's revision as resource version and appear in the
// change feed as spec changes (or deletions, when marked), removed ones as
// finalized.
func (s *Store) Import(ctx context.Context, decls []Declaration, opts ImportOptions) (ImportResult, error) {
	seen := make(map[string]bool, len(decls))
	for i := range decls {
		d := &decls[i]
		if err := checkKey(d.Sandbox.Namespace, d.Sandbox.Name); err != nil {
			return ImportResult{}, fmt.Errorf("import: %w", err)
		}
		if d.Generation == 0 {
			return ImportResult{}, fmt.Errorf("import: sandbox %q has generation 0; generations start at 1", d.Key())
		}
		if seen[d.Key()] {
			return ImportResult{}, fmt.Errorf("import: sandbox %q appears more than once in the batch", d.Key())
		}
		seen[d.Key()] = true
	}
	var res ImportResult
	rev, err := s.update(ctx, func(w *writeTx) error {
		res = ImportResult{}
		for i := range decls {
			d := decls[i]
			old, found, err := getSandboxImpl(w.tx, d.Key())
			if err != nil {
				return err
			}
			if found && old.Declaration.Same(d) {
				res.Unchanged++
				continue
			}
			e := sandboxEntry{Declaration: d, ResourceVersion: w.rev}
			e.Sandbox.Source = spec.Source{}
			if e.Hash == "" {
				e.Hash = e.Sandbox.Spec.Hash()
			}
			if err := putSandboxImpl(w.tx, &e); err != nil {
				return err
			}
			kind := ChangeSpec
			if e.DeletionRequestedAt != nil {
				kind = ChangeDeleted
			}
			w.record(kind, d.Key(), e.Generation)
			if found {
				res.Updated++
			} else {
				res.Created++
			}
		}
		var gone []sandboxEntry
		if opts.RemoveMissing {
			c := w.tx.Bucket(bucketSandboxes).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if seen[string(k)] {
					continue
				}
				e, err := decodeSandbox(k, v)
				if err != nil {
					return err
				}
				gone = append(gone, e)
			}
		} else {
			for _, key := range opts.Remove {
				e, found, err := getSandboxImpl(w.tx, key)
				if err != nil {
					return err
				}
				if found && !seen[key] {
					gone = append(gone, e)
				}
			}
		}
		for _, e := range gone {
			key := e.Sandbox.Key()
			for _, b := range [][]byte{bucketSandboxes, bucketStatus, bucketEvents} {
				if err := w.tx.Bucket(b).Delete([]byte(key)); err != nil {
					return fmt.Errorf("remove %s entry of %q: %w", b, key, err)
				}
			}
			w.record(ChangeFinalized, key, e.Generation)
			res.Removed++
		}
		return nil
	})
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	res.Revision = rev
	s.log.Debug("imported", "revision", rev, "created", res.Created, "updated", res.Updated, "removed", res.Removed)
	return res, nil
}
