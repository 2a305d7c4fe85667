package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What the store knows of Nomad, for telling a store that fell behind
// (restored from an older backup, say) from one that is current.
//
// nomad_index is the highest JobModifyIndex any status ever recorded: the
// newest Nomad state this store has seen of its jobs. A job created, or
// registered with another spec, above it was written after this store's
// last look, by a store that knew more. gc_hold, once set, keeps garbage
// collection off across restarts until an operator releases it: a held
// store gains statuses as it runs, and would otherwise look current after
// the next restart and purge what it never knew.
var (
	keyNomadIndex = []byte("nomad_index")
	keyGCHold     = []byte("gc_hold")
)

// GCHold is a recorded refusal to collect garbage.
type GCHold struct {
	// Reason says, for a person, why garbage collection is off.
	Reason string `json:"reason"`
	// Since is when the refusal was recorded.
	Since time.Time `json:"since"`
	// NomadIndex is the store's NomadIndex when the refusal was recorded:
	// jobs written above it hold what the store does not know.
	NomadIndex uint64 `json:"nomadIndex"`
	// Jobs names the owned jobs that showed it (at most a few), and
	// JobCount counts them all.
	Jobs     []string `json:"jobs,omitempty"`
	JobCount int      `json:"jobCount"`
}

// NomadIndex is the highest Nomad job modify index any status of this
// store recorded. A store written before it was kept computes it from the
// statuses it holds.
func (s *Store) NomadIndex(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("read nomad index: %w", err)
	}
	var idx uint64
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyNomadIndex); v != nil {
			idx = getU64(v)
			return nil
		}
		return tx.Bucket(bucketStatus).ForEach(func(k, v []byte) error {
			var e statusEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode status %q: %w", k, err)
			}
			idx = max(idx, e.Status.JobModifyIndex)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("read nomad index: %w", err)
	}
	return idx, nil
}

// raiseNomadIndexImpl moves nomad_index up to idx. The first time, on a
// store written before it was kept, it starts from the statuses held.
func raiseNomadIndexImpl(tx *bolt.Tx, idx uint64) error {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyNomadIndex)
	if v == nil {
		if err := tx.Bucket(bucketStatus).ForEach(func(_, v []byte) error {
			var e statusEntry
			if json.Unmarshal(v, &e) == nil {
				idx = max(idx, e.Status.JobModifyIndex)
			}
			return nil
		}); err != nil {
			return err
		}
	} else if getU64(v) >= idx {
		return nil
	}
	if err := meta.Put(keyNomadIndex, u64(idx)); err != nil {
		return fmt.Errorf("write nomad index: %w", err)
	}
	return nil
}

// GCHeld returns the recorded refusal to collect garbage, if any.
func (s *Store) GCHeld(ctx context.Context) (GCHold, bool, error) {
	if err := ctx.Err(); err != nil {
		return GCHold{}, false, fmt.Errorf("read gc hold: %w", err)
	}
	var (
		h     GCHold
		found bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyGCHold)
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &h)
	})
	if err != nil {
		return GCHold{}, false, fmt.Errorf("read gc hold: %w", err)
	}
	return h, found, nil
}

// HoldGC records a refusal to collect garbage, unless one is recorded
// already (the first reason stands), and returns the one in force. It is
// bookkeeping, not a change of any sandbox: it takes no revision.
func (s *Store) HoldGC(ctx context.Context, h GCHold) (GCHold, error) {
	if err := ctx.Err(); err != nil {
		return GCHold{}, fmt.Errorf("hold gc: %w", err)
	}
	if h.Since.IsZero() {
		h.Since = s.now().UTC()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyGCHold); v != nil {
			return json.Unmarshal(v, &h)
		}
		v, err := json.Marshal(h)
		if err != nil {
			return err
		}
		return meta.Put(keyGCHold, v)
	})
	if err != nil {
		return GCHold{}, fmt.Errorf("hold gc: %w", wrapClosed(err))
	}
	return h, nil
}

// ReleaseGC removes the recorded refusal, as an operator confirms that
// the store is the desired state, and raises nomad_index to atLeast, the
// Nomad index the operator's confirmation covers, so that the same jobs
// do not hold garbage collection again at the next start.
func (s *Store) ReleaseGC(ctx context.Context, atLeast uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release gc hold: %w", err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Delete(keyGCHold); err != nil {
			return err
		}
		return raiseNomadIndexImpl(tx, atLeast)
	})
	if err != nil {
		return fmt.Errorf("release gc hold: %w", wrapClosed(err))
	}
	return nil
}
