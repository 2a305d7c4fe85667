package store

import (
	"context"
	"fmt"
)

// Delete marks the sandbox under key for deletion and returns the marked
// record. The record stays, like a Kubernetes object held by a finalizer,
// until the reconciler has removed the Nomad job and calls Finalize.
// Deleting a record already marked changes nothing and is not an error.
func (s *Store) Delete(ctx context.Context, key string) (Record, error) {
	return s.deleteImpl(ctx, key, 0)
}

// DeleteAt is Delete with a precondition: the record must still have
// resourceVersion, the version the caller decided on. A record applied
// again since (a longer ttl, say) fails with ErrConflict and is left as
// it is, so a decision taken on an old version never deletes a new one.
func (s *Store) DeleteAt(ctx context.Context, key string, resourceVersion uint64) (Record, error) {
	if resourceVersion == 0 {
		return Record{}, fmt.Errorf("delete sandbox %q: no resource version given for the precondition", key)
	}
	return s.deleteImpl(ctx, key, resourceVersion)
}

// deleteImpl marks key for deletion; a non-zero resourceVersion must match
// the record's.
func (s *Store) deleteImpl(ctx context.Context, key string, resourceVersion uint64) (Record, error) {
	var rec Record
	_, err := s.update(ctx, func(w *writeTx) error {
		e, found, err := getSandboxImpl(w.tx, key)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if resourceVersion != 0 && e.ResourceVersion != resourceVersion {
			return fmt.Errorf("expected resource version %d, found %d: %w", resourceVersion, e.ResourceVersion, ErrConflict)
		}
		if e.DeletionRequestedAt == nil {
			markDeletedImpl(w, &e)
			if err := putSandboxImpl(w.tx, &e); err != nil {
				return err
			}
		}
		rec, err = recordImpl(w.tx, key, e)
		return err
	})
	if err != nil {
		return Record{}, fmt.Errorf("delete sandbox %q: %w", key, err)
	}
	return rec, nil
}

// markDeletedImpl sets the deletion mark on e and records the change; the
// caller writes e.
func markDeletedImpl(w *writeTx, e *sandboxEntry) {
	t := w.now
	e.DeletionRequestedAt = &t
	e.UpdatedAt = w.now
	e.ResourceVersion = w.rev
	w.record(ChangeDeleted, e.Sandbox.Key(), e.Generation)
}

// Finalize removes the record under key, with its status and events, once
// the reconciler has confirmed that the Nomad job is gone. The record must
// still be marked for deletion and still have resourceVersion, the version
// the reconciler read; otherwise the sandbox was applied again in between
// and Finalize fails with ErrConflict. A missing key is already finalized:
// no error.
func (s *Store) Finalize(ctx context.Context, key string, resourceVersion uint64) error {
	_, err := s.update(ctx, func(w *writeTx) error {
		e, found, err := getSandboxImpl(w.tx, key)
		if err != nil || !found {
			return err
		}
		if e.DeletionRequestedAt == nil {
			return fmt.Errorf("record is not marked for deletion (resource version %d): %w", e.ResourceVersion, ErrConflict)
		}
		if e.ResourceVersion != resourceVersion {
			return fmt.Errorf("expected resource version %d, found %d: %w", resourceVersion, e.ResourceVersion, ErrConflict)
		}
		for _, b := range [][]byte{bucketSandboxes, bucketStatus, bucketEvents} {
			if err := w.tx.Bucket(b).Delete([]byte(key)); err != nil {
				return fmt.Errorf("remove %s entry: %w", b, err)
			}
		}
		w.record(ChangeFinalized, key, e.Generation)
		return nil
	})
	if err != nil {
		return fmt.Errorf("finalize sandbox %q: %w", key, err)
	}
	return nil
}
