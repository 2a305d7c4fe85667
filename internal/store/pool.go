package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
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
	// Stopping counts sandboxes marked for deletion whose records (and
	// maybe jobs) are not gone yet; max counts them.
	Stopping int
	// Created and Deleted are the sandboxes this sync created or marked
	// for deletion.
	Created, Deleted []string
	// Exhausted: fewer than Size sandboxes wait because Max is reached.
	Exhausted bool
}

// poolMember is one sandbox of a pool as a sync or a claim sees it: its
// header, decoded alone (a pool's key range holds its claimed sandboxes
// too, which a claim only skips), and whether it is Ready, read only for
// an unclaimed, live one.
type poolMember struct {
	key   string
	h     sandboxHeader
	raw   []byte
	ready bool
}

func (m *poolMember) claimed() bool { return m.h.Member.Claimed() }
func (m *poolMember) live() bool    { return m.h.DeletionRequestedAt == nil }

// entry decodes the whole record; raw is valid until the transaction
// writes.
func (m *poolMember) entry() (sandboxEntry, error) { return decodeSandbox([]byte(m.key), m.raw) }

// membersImpl reads the sandboxes of pool p: keys "<ns>/<pool>-" and a
// Member naming the pool.
func membersImpl(tx *bolt.Tx, ns, pool string) ([]poolMember, error) {
	prefix := []byte(ns + "/" + pool + "-")
	var out []poolMember
	c := tx.Bucket(bucketSandboxes).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		m := poolMember{key: string(k), raw: v}
		if err := json.Unmarshal(v, &m.h); err != nil {
			return nil, fmt.Errorf("decode sandbox %q: %w", k, err)
		}
		if m.h.Member == nil || m.h.Member.Pool != pool {
			continue
		}
		if !m.claimed() && m.live() {
			st, _, err := getStatusImpl(tx, m.key)
			if err != nil {
				return nil, err
			}
			m.ready = readyStatus(st, m.h.Generation)
		}
		out = append(out, m)
	}
	return out, nil
}

// The pools' index lists, per pool, its unclaimed, live sandboxes of the
// current template in creation order, so that a claim reads a few records
// instead of the pool's whole key range (which holds its claimed
// sandboxes too). It is derived data, in a bucket nested in meta: a claim
// checks every entry against the record and drops stale ones, and every
// SyncPool rewrites the pool's entries from the records, so that an index
// missing entries (a store filled by Import, from another instance) is
// whole again after the pool's next sync.
var bucketPoolIndex = []byte("pool-index")

func indexKey(pool string, created time.Time, member string) []byte {
	return []byte(pool + "\x00" + created.UTC().Format("2006-01-02T15:04:05.000000000Z") + "\x00" + member)
}

func indexPrefix(pool string) []byte { return []byte(pool + "\x00") }

func poolIndexImpl(w *writeTx) (*bolt.Bucket, error) {
	b, err := w.tx.Bucket(bucketMeta).CreateBucketIfNotExists(bucketPoolIndex)
	if err != nil {
		return nil, fmt.Errorf("open the pools' index: %w", err)
	}
	return b, nil
}

// reindexImpl makes the pool's index entries exactly those of waiting.
func reindexImpl(w *writeTx, pool string, waiting []poolMember) error {
	idx, err := poolIndexImpl(w)
	if err != nil {
		return err
	}
	want := make(map[string]bool, len(waiting))
	for _, m := range waiting {
		want[string(indexKey(pool, m.h.CreatedAt, m.key))] = true
	}
	prefix := indexPrefix(pool)
	var stale [][]byte
	c := idx.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if want[string(k)] {
			delete(want, string(k))
			continue
		}
		stale = append(stale, bytes.Clone(k))
	}
	for _, k := range stale {
		if err := idx.Delete(k); err != nil {
			return fmt.Errorf("update the pools' index: %w", err)
		}
		w.touched = true
	}
	for k := range want {
		if err := idx.Put([]byte(k), nil); err != nil {
			return fmt.Errorf("update the pools' index: %w", err)
		}
		w.touched = true
	}
	return nil
}

// SyncPool makes the pool under key hold what it declares, in one
// transaction: Size unclaimed sandboxes of the current template (created
// as records; the reconcile loop starts them like any sandbox), outdated
// unclaimed ones marked for deletion, the excess over Size marked too
// (those not Ready first), and never more than Max live sandboxes. Claimed
// sandboxes are left alone. A pool marked for deletion loses its
// unclaimed sandboxes, then its record. Running it again on an unchanged
// store writes nothing, so a restart or a new leader never duplicates.
func (s *Store) SyncPool(ctx context.Context, key string) (PoolState, error) {
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
		var waiting, remove []poolMember // waiting: unclaimed, live, current
		live := 0
		stopping := 0 // marked for deletion, their jobs maybe still running
		for _, m := range members {
			switch {
			case !m.live():
				stopping++
				continue
			case m.claimed():
				ps.Claimed++
				live++
			case ps.Deleting || m.h.Hash != hash:
				remove = append(remove, m)
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
				return a.h.CreatedAt.Compare(b.h.CreatedAt)
			})
			remove = append(remove, waiting[size:]...)
			waiting = waiting[:size]
			live -= excess
		}
		// Decoded before any write: a write may move the values read.
		entries := make([]sandboxEntry, len(remove))
		for i := range remove {
			if entries[i], err = remove[i].entry(); err != nil {
				return err
			}
		}
		for i := range entries {
			e := &entries[i]
			markDeletedImpl(w, e)
			if err := putSandboxImpl(w.tx, e); err != nil {
				return err
			}
			ps.Deleted = append(ps.Deleted, e.Sandbox.Key())
		}
		if ps.Deleting {
			if err := reindexImpl(w, key, nil); err != nil {
				return err
			}
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
		// max bounds what may run in Nomad: sandboxes on their way out
		// count until they are gone.
		stopping += len(remove)
		ps.Stopping = stopping
		if m := ps.Settings.Max; m > 0 && live+stopping+want > m {
			want = max(0, m-live-stopping)
			ps.Exhausted = len(waiting)+want < size
		}
		for range want {
			e, err := newMemberImpl(w, &pe)
			if err != nil {
				return err
			}
			m := poolMember{key: e.Sandbox.Key()}
			m.h.CreatedAt = e.CreatedAt
			waiting = append(waiting, m)
			ps.Created = append(ps.Created, e.Sandbox.Key())
		}
		if err := reindexImpl(w, key, waiting); err != nil {
			return err
		}
		for _, m := range waiting {
			if m.ready {
				ps.Ready++
			} else {
				ps.Pending++
			}
		}
		return nil
	})
	if err != nil {
		return PoolState{}, fmt.Errorf("sync pool %q: %w", key, err)
	}
	return ps, nil
}

func hasUnclaimedImpl(members []poolMember) bool {
	for _, m := range members {
		if !m.claimed() {
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
	// Fresh, when set, says whether a sandbox's status (key, at
	// generation) was observed by the reconcile loop that runs now;
	// others are not handed out, whatever their status says.
	Fresh func(key string, generation uint64) bool
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
		pick, err := claimableImpl(w, key, &pe, opts.Fresh)
		if err != nil {
			return err
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

// claimableImpl finds, through the pools' index, the oldest Ready
// sandbox of the pool that a claim may take, dropping the entries it
// finds stale on the way, and removes its entry.
func claimableImpl(w *writeTx, key string, pe *sandboxEntry, fresh func(string, uint64) bool) (*sandboxEntry, error) {
	idx, err := poolIndexImpl(w)
	if err != nil {
		return nil, err
	}
	hash := pe.Sandbox.Spec.Hash()
	sandboxes := w.tx.Bucket(bucketSandboxes)
	prefix := indexPrefix(key)
	var stale [][]byte
	var pick *sandboxEntry
	c := idx.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		member := string(k[bytes.LastIndexByte(k, 0)+1:])
		raw := sandboxes.Get([]byte(member))
		m := poolMember{key: member, raw: raw}
		if raw != nil {
			if err := json.Unmarshal(raw, &m.h); err != nil {
				return nil, fmt.Errorf("decode sandbox %q: %w", member, err)
			}
		}
		if raw == nil || m.h.Member == nil || m.h.Member.Pool != pe.Sandbox.Name || m.claimed() || !m.live() || m.h.Hash != hash {
			stale = append(stale, bytes.Clone(k))
			continue
		}
		st, _, err := getStatusImpl(w.tx, member)
		if err != nil {
			return nil, err
		}
		if !readyStatus(st, m.h.Generation) || (fresh != nil && !fresh(member, m.h.Generation)) {
			continue
		}
		e, err := m.entry()
		if err != nil {
			return nil, err
		}
		pick = &e
		stale = append(stale, bytes.Clone(k))
		break
	}
	for _, k := range stale {
		if err := idx.Delete(k); err != nil {
			return nil, fmt.Errorf("update the pools' index: %w", err)
		}
		w.touched = true
	}
	if pick == nil {
		// The index may lack entries (a store filled by Import, before
		// the pool's next sync): the records decide.
		return claimableByScanImpl(w, pe, fresh)
	}
	return pick, nil
}

// claimableByScanImpl finds the oldest claimable sandbox of the pool by
// reading its whole key range.
func claimableByScanImpl(w *writeTx, pe *sandboxEntry, fresh func(string, uint64) bool) (*sandboxEntry, error) {
	members, err := membersImpl(w.tx, pe.Sandbox.Namespace, pe.Sandbox.Name)
	if err != nil {
		return nil, err
	}
	hash := pe.Sandbox.Spec.Hash()
	var oldest *poolMember
	for i := range members {
		m := &members[i]
		if !m.ready || m.h.Hash != hash || (fresh != nil && !fresh(m.key, m.h.Generation)) {
			continue
		}
		if oldest == nil || m.h.CreatedAt.Before(oldest.h.CreatedAt) {
			oldest = m
		}
	}
	if oldest == nil {
		return nil, ErrNoneReady
	}
	e, err := oldest.entry()
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// ClaimLabelProblem says what is wrong with a label a claim asks for, or "".
func ClaimLabelProblem(k string) string {
	if strings.HasPrefix(k, "agentkernel.dev/") {
		return fmt.Sprintf("the label %q is the controller's own", k)
	}
	return ""
}
