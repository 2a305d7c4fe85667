package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Labels the store puts on a pool's sandboxes, so that selectors find
// them (akctl get -l agentkernel.dev/pool=python).
const (
	LabelPool    = "agentkernel.dev/pool"
	LabelClaimed = "agentkernel.dev/claimed"
)

// ErrNoneReady is a claim on a pool with no Ready, unclaimed sandbox.
var ErrNoneReady = errors.New("no ready sandbox in the pool")

// ErrNameTaken is an apply of a pool under a sandbox's name or the other
// way round, or of a declaration over a pool's sandbox.
var ErrNameTaken = errors.New("name taken")

// Member makes a record a sandbox of a pool.
type Member struct {
	// Pool names the pool, in the sandbox's namespace.
	Pool string `json:"pool"`
	// ClaimedAt is set once the sandbox is claimed; from then on the
	// pool no longer counts it as waiting, and never takes it back.
	ClaimedAt *time.Time `json:"claimedAt,omitempty"`
	// ExpiresAt, set by a claim with a TTL, is when the claimed sandbox
	// is deleted.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// Claimed reports whether the sandbox has been claimed.
func (m *Member) Claimed() bool { return m != nil && m.ClaimedAt != nil }

func (m *Member) same(o *Member) bool {
	if m == nil || o == nil {
		return m == o
	}
	return m.Pool == o.Pool && timeEqual(m.ClaimedAt, o.ClaimedAt) && timeEqual(m.ExpiresAt, o.ExpiresAt)
}

func timeEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// Ready reports whether the record's current generation runs: Nomad runs
// the current version of its job and its allocation is healthy, as the
// reconciler last observed.
func (r Record) Ready() bool { return readyStatus(r.Status, r.Generation) && !r.Deleting() }

func readyStatus(st Status, generation uint64) bool {
	c, ok := st.Condition("Ready")
	return ok && c.Status == ConditionTrue && st.Phase == PhaseRunning && st.ObservedGeneration == generation
}

// PoolState is what SyncPool found and did.
type PoolState struct {
	// Found is false when no pool is declared under the key.
	Found    bool
	Deleting bool
	// Finalized: the pool was marked for deletion and had no unclaimed
	// sandbox left, so its record is gone.
	Finalized  bool
	Generation uint64
	Settings   spec.PoolSettings
	// Counts of the pool's live sandboxes: unclaimed Ready ones, unclaimed
	// ones not Ready yet, claimed ones.
	Ready, Pending, Claimed int
	// Created and Deleted are the sandboxes this sync created or marked
	// for deletion; Members every live sandbox of the pool after it.
	Created, Deleted, Members []string
	// Exhausted: fewer than Size sandboxes wait because Max is reached.
	Exhausted bool
}

// SyncOptions tune SyncPool.
type SyncOptions struct {
	// MaxCreate bounds the sandboxes one sync creates (all it needs when
	// zero): the reconcile loop's write limit paces Nomad either way.
	MaxCreate int
}

// poolMember is one sandbox of a pool as a sync or a claim sees it.
type poolMember struct {
	e     sandboxEntry
	ready bool
}

// membersImpl reads the live and deleting sandboxes of pool p: keys
// "<ns>/<pool>-" and a Member naming the pool.
func membersImpl(tx *bolt.Tx, ns, pool string) ([]poolMember, error) {
	prefix := []byte(ns + "/" + pool + "-")
	var out []poolMember
	c := tx.Bucket(bucketSandboxes).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		e, err := decodeSandbox(k, v)
		if err != nil {
			return nil, err
		}
		if e.Member == nil || e.Member.Pool != pool {
			continue
		}
		st, _, err := getStatusImpl(tx, string(k))
		if err != nil {
			return nil, err
		}
		out = append(out, poolMember{e: e, ready: readyStatus(st, e.Generation)})
	}
	return out, nil
}

// SyncPool makes the pool under key hold what it declares, in one
// transaction: Size unclaimed sandboxes of the current template (created
// as records; the reconcile loop starts them like any sandbox), outdated
// unclaimed ones marked for deletion, the excess over Size marked too
// (those not Ready first), and never more than Max live sandboxes. Claimed
// sandboxes are left alone. A pool marked for deletion loses its
// unclaimed sandboxes, then its record. Running it again on an unchanged
// store writes nothing, so a restart or a new leader never duplicates.
func (s *Store) SyncPool(ctx context.Context, key string, opts SyncOptions) (PoolState, error) {
	var ps PoolState
	_, err := s.update(ctx, func(w *writeTx) error {
		ps = PoolState{}
		pe, found, err := getSandboxImpl(w.tx, key)
		if err != nil || !found || pe.Pool == nil {
			return err
		}
		ps.Found, ps.Generation, ps.Settings = true, pe.Generation, *pe.Pool
		ps.Deleting = pe.DeletionRequestedAt != nil
		members, err := membersImpl(w.tx, pe.Sandbox.Namespace, pe.Sandbox.Name)
		if err != nil {
			return err
		}
		hash := pe.Sandbox.Spec.Hash()
		var waiting []poolMember // unclaimed, live, current
		var remove []sandboxEntry
		live := 0
		for _, m := range members {
			switch {
			case m.e.DeletionRequestedAt != nil:
				continue
			case m.e.Member.Claimed():
				ps.Claimed++
				ps.Members = append(ps.Members, m.e.Sandbox.Key())
				live++
			case ps.Deleting || m.e.Hash != hash:
				remove = append(remove, m.e)
			default:
				waiting = append(waiting, m)
				live++
			}
		}
		size := ps.Settings.Size
		if ps.Deleting {
			size = 0
		}
		if excess := len(waiting) - size; excess > 0 {
			// Keep the Ready ones, oldest first: claims take the oldest.
			slices.SortStableFunc(waiting, func(a, b poolMember) int {
				if a.ready != b.ready {
					if a.ready {
						return -1
					}
					return 1
				}
				return a.e.CreatedAt.Compare(b.e.CreatedAt)
			})
			for _, m := range waiting[size:] {
				remove = append(remove, m.e)
			}
			waiting = waiting[:size]
			live -= excess
		}
		for i := range remove {
			e := &remove[i]
			markDeletedImpl(w, e)
			if err := putSandboxImpl(w.tx, e); err != nil {
				return err
			}
			ps.Deleted = append(ps.Deleted, e.Sandbox.Key())
		}
		if ps.Deleting {
			if len(remove) == 0 && !hasUnclaimedImpl(members) {
				for _, b := range [][]byte{bucketSandboxes, bucketStatus, bucketEvents} {
					if err := w.tx.Bucket(b).Delete([]byte(key)); err != nil {
						return fmt.Errorf("remove %s entry of %q: %w", b, key, err)
					}
				}
				w.record(ChangeFinalized, key, pe.Generation)
				ps.Finalized = true
			}
			return nil
		}
		want := size - len(waiting)
		if m := ps.Settings.Max; m > 0 && live+want > m {
			want = max(0, m-live)
			ps.Exhausted = len(waiting)+want < size
		}
		if opts.MaxCreate > 0 {
			want = min(want, opts.MaxCreate)
		}
		for range want {
			e, err := newMemberImpl(w, &pe)
			if err != nil {
				return err
			}
			waiting = append(waiting, poolMember{e: e})
			ps.Created = append(ps.Created, e.Sandbox.Key())
		}
		for _, m := range waiting {
			ps.Members = append(ps.Members, m.e.Sandbox.Key())
			if m.ready {
				ps.Ready++
			} else {
				ps.Pending++
			}
		}
		slices.Sort(ps.Members)
		return nil
	})
	if err != nil {
		return PoolState{}, fmt.Errorf("sync pool %q: %w", key, err)
	}
	return ps, nil
}

func hasUnclaimedImpl(members []poolMember) bool {
	for _, m := range members {
		if !m.e.Member.Claimed() {
			return true
		}
	}
	return false
}

// newMemberImpl writes a new sandbox of pool pe, named "<pool>-<random
// suffix>" with a suffix no record holds.
func newMemberImpl(w *writeTx, pe *sandboxEntry) (sandboxEntry, error) {
	b := w.tx.Bucket(bucketSandboxes)
	for range 100 {
		name := pe.Sandbox.Name + "-" + randomSuffix()
		sb := spec.Sandbox{Namespace: pe.Sandbox.Namespace, Name: name, Spec: pe.Sandbox.Spec}
		if b.Get([]byte(sb.Key())) != nil {
			continue
		}
		sb.Labels = maps.Clone(pe.Sandbox.Labels)
		if sb.Labels == nil {
			sb.Labels = map[string]string{}
		}
		sb.Labels[LabelPool] = pe.Sandbox.Name
		sb.Labels[LabelClaimed] = "false"
		e := sandboxEntry{Declaration: Declaration{
			Sandbox: sb, Source: pe.Source, Hash: sb.Spec.Hash(), ApplySet: pe.ApplySet, Generation: 1,
			CreatedAt: w.now, UpdatedAt: w.now, Member: &Member{Pool: pe.Sandbox.Name},
		}, ResourceVersion: w.rev}
		if err := putSandboxImpl(w.tx, &e); err != nil {
			return sandboxEntry{}, err
		}
		w.record(ChangeSpec, sb.Key(), 1)
		return e, nil
	}
	return sandboxEntry{}, fmt.Errorf("pool %q: no free name after 100 tries", pe.Sandbox.Key())
}

// suffixAlphabet has no vowels, so that a suffix never spells a word (as
// Kubernetes' generated names).
const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

func randomSuffix() string {
	var b [spec.PoolSuffixLength]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = suffixAlphabet[int(b[i])%len(suffixAlphabet)]
	}
	return string(b[:])
}

// ClaimOptions tune a claim.
type ClaimOptions struct {
	// TTL is the claimed sandbox's lifetime from now: zero takes the
	// pool's claim_ttl, and with neither it lives until deleted.
	TTL time.Duration
	// Labels are added to the sandbox's.
	Labels map[string]string
}

// Claim hands out a Ready, unclaimed sandbox of the pool under key, the
// oldest, marking it claimed in one transaction: two claims never get the
// same sandbox. Nothing changes in Nomad: the spec stays the same, so the
// job is not touched. The record keeps its generation; its labels get
// agentkernel.dev/claimed=true and opts.Labels. ErrNotFound: no such pool
// (or it is being deleted); ErrNoneReady: nothing to hand out now.
func (s *Store) Claim(ctx context.Context, key string, opts ClaimOptions) (Record, error) {
	var out Record
	_, err := s.update(ctx, func(w *writeTx) error {
		pe, found, err := getSandboxImpl(w.tx, key)
		if err != nil {
			return err
		}
		if !found || pe.Pool == nil || pe.DeletionRequestedAt != nil {
			return ErrNotFound
		}
		members, err := membersImpl(w.tx, pe.Sandbox.Namespace, pe.Sandbox.Name)
		if err != nil {
			return err
		}
		hash := pe.Sandbox.Spec.Hash()
		var pick *sandboxEntry
		for i := range members {
			m := &members[i]
			if !m.ready || m.e.Member.Claimed() || m.e.DeletionRequestedAt != nil || m.e.Hash != hash {
				continue
			}
			if pick == nil || m.e.CreatedAt.Before(pick.CreatedAt) {
				pick = &m.e
			}
		}
		if pick == nil {
			return ErrNoneReady
		}
		now := w.now
		pick.Member = &Member{Pool: pick.Member.Pool, ClaimedAt: &now}
		ttl := opts.TTL
		if ttl == 0 {
			ttl = pe.Pool.ClaimTTLDuration()
		}
		if ttl > 0 {
			t := now.Add(ttl)
			pick.Member.ExpiresAt = &t
		}
		labels := maps.Clone(pick.Sandbox.Labels)
		maps.Copy(labels, opts.Labels)
		labels[LabelPool] = pick.Member.Pool
		labels[LabelClaimed] = "true"
		pick.Sandbox.Labels = labels
		pick.UpdatedAt = now
		pick.ResourceVersion = w.rev
		if err := putSandboxImpl(w.tx, pick); err != nil {
			return err
		}
		w.record(ChangeSpec, pick.Sandbox.Key(), pick.Generation)
		out, err = recordImpl(w.tx, pick.Sandbox.Key(), *pick)
		return err
	})
	if err != nil {
		return Record{}, fmt.Errorf("claim from pool %q: %w", key, err)
	}
	return out, nil
}

// ClaimLabelProblem says what is wrong with a label a claim asks for, or "".
func ClaimLabelProblem(k string) string {
	if strings.HasPrefix(k, "agentkernel.dev/") {
		return fmt.Sprintf("the label %q is the controller's own", k)
	}
	return ""
}
