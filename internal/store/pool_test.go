package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// applyPool declares a pool whose template is sandbox(…, image).
func applyPool(t *testing.T, s *store.Store, name, image string, settings spec.PoolSettings) {
	t.Helper()
	sb := sandbox("agents", name, image, map[string]string{"team": "ml"})
	if _, err := s.Apply(t.Context(), []store.Object{{Sandbox: sb, Pool: &settings}}, store.ApplyOptions{ApplySet: "pools"}); err != nil {
		t.Fatalf("apply pool: %v", err)
	}
}

func syncPool(t *testing.T, s *store.Store, key string) store.PoolState {
	t.Helper()
	ps, err := s.SyncPool(t.Context(), key)
	if err != nil {
		t.Fatalf("SyncPool: %v", err)
	}
	return ps
}

// markReady records, as the reconciler does, that the sandboxes run
// their current generation.
func markReady(t *testing.T, s *store.Store, keys ...string) {
	t.Helper()
	for _, k := range keys {
		rec, err := s.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		st := store.Status{Phase: store.PhaseRunning, ObservedGeneration: rec.Generation,
			Conditions: []store.Condition{{Type: "Ready", Status: store.ConditionTrue}}}
		if err := s.UpdateStatus(t.Context(), k, st); err != nil {
			t.Fatal(err)
		}
	}
}

// members lists the pool's live sandboxes, claimed and unclaimed.
func members(t *testing.T, s *store.Store, pool string) (unclaimed, claimed []store.Record) {
	t.Helper()
	recs, _, err := s.List(t.Context(), store.ListOptions{Namespace: "agents"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Member == nil || r.Member.Pool != pool || r.Deleting() {
			continue
		}
		if r.Member.Claimed() {
			claimed = append(claimed, r)
		} else {
			unclaimed = append(unclaimed, r)
		}
	}
	return unclaimed, claimed
}

func TestSyncPoolCreatesSizeOnceAndNamesAfterThePool(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 4})
	ps := syncPool(t, s, "agents/py")
	if len(ps.Created) != 4 || ps.Pending != 4 || ps.Ready != 0 {
		t.Fatalf("first sync: %+v, want 4 created, all pending", ps)
	}
	rev, _ := s.Revision(t.Context())
	// Again, as after a restart or on a new leader: nothing to do, nothing
	// written, no duplicate.
	if ps := syncPool(t, s, "agents/py"); len(ps.Created)+len(ps.Deleted) != 0 {
		t.Fatalf("second sync changed %v %v", ps.Created, ps.Deleted)
	}
	if rev2, _ := s.Revision(t.Context()); rev2 != rev {
		t.Errorf("an idempotent sync moved the revision from %d to %d", rev, rev2)
	}
	unclaimed, _ := members(t, s, "py")
	for _, r := range unclaimed {
		name := r.Sandbox.Name
		if !strings.HasPrefix(name, "py-") || len(name) != len("py-")+spec.PoolSuffixLength {
			t.Errorf("name %q, want py-<%d characters>", name, spec.PoolSuffixLength)
		}
		if r.Sandbox.Labels[store.LabelPool] != "py" || r.Sandbox.Labels[store.LabelClaimed] != "false" || r.Sandbox.Labels["team"] != "ml" {
			t.Errorf("%s labels %v", name, r.Sandbox.Labels)
		}
		if r.Sandbox.Spec.Image != "python:3.12" || r.Generation != 1 {
			t.Errorf("%s: image %q generation %d", name, r.Sandbox.Spec.Image, r.Generation)
		}
	}
}

// 100 claims at once on 20 Ready sandboxes: 20 distinct sandboxes
// handed out, every other claim told that none is ready.
func TestConcurrentClaimsNeverShareASandbox(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 20})
	ps := syncPool(t, s, "agents/py")
	markReady(t, s, ps.Created...)

	var (
		mu      sync.Mutex
		got     []string
		refused int
		wg      sync.WaitGroup
	)
	for range 100 {
		wg.Go(func() {
			rec, err := s.Claim(context.Background(), "agents/py", store.ClaimOptions{Labels: map[string]string{"task": "t"}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				got = append(got, rec.Key())
			case errors.Is(err, store.ErrNoneReady):
				refused++
			default:
				t.Errorf("claim: %v", err)
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	if len(got) != 20 || len(slices.Compact(slices.Clone(got))) != 20 || refused != 80 {
		t.Fatalf("%d claims served (%d distinct), %d refused; want 20 distinct and 80 refused", len(got), len(slices.Compact(slices.Clone(got))), refused)
	}
	_, claimed := members(t, s, "py")
	if len(claimed) != 20 {
		t.Fatalf("%d claimed records, want 20", len(claimed))
	}
	for _, r := range claimed {
		if r.Sandbox.Labels[store.LabelClaimed] != "true" || r.Sandbox.Labels["task"] != "t" {
			t.Errorf("%s labels %v", r.Key(), r.Sandbox.Labels)
		}
		// The claim changed no spec: the job is not touched, and the
		// record still runs what it ran.
		if r.Generation != 1 || !r.Ready() {
			t.Errorf("%s: generation %d ready %v after the claim", r.Key(), r.Generation, r.Ready())
		}
	}
}

func TestClaimTakesOnlyReadyCurrentUnclaimed(t *testing.T) {
	s := openStore(t, store.Options{})
	if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim on no pool: %v, want ErrNotFound", err)
	}
	if _, err := s.Apply(t.Context(), objects(sandbox("agents", "plain", "x", nil)), store.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(t.Context(), "agents/plain", store.ClaimOptions{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim on a sandbox: %v, want ErrNotFound", err)
	}
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 2, ClaimTTL: "1h0m0s"})
	ps := syncPool(t, s, "agents/py")
	if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{}); !errors.Is(err, store.ErrNoneReady) {
		t.Fatalf("claim with none ready: %v, want ErrNoneReady", err)
	}
	markReady(t, s, ps.Created[0])
	rec, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Key() != ps.Created[0] {
		t.Fatalf("claimed %s, want the Ready one %s", rec.Key(), ps.Created[0])
	}
	if rec.Member.ExpiresAt == nil || rec.Member.ExpiresAt.Sub(*rec.Member.ClaimedAt) != time.Hour {
		t.Errorf("claim expiry %v from %v, want the pool's claim_ttl of 1h", rec.Member.ExpiresAt, rec.Member.ClaimedAt)
	}
	// A claim's own TTL wins.
	markReady(t, s, ps.Created[1])
	rec, err = s.Claim(t.Context(), "agents/py", store.ClaimOptions{TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Member.ExpiresAt.Sub(*rec.Member.ClaimedAt); d != 5*time.Minute {
		t.Errorf("claim expiry after %s, want 5m", d)
	}
	// A sandbox whose template is outdated is not handed out.
	ps = syncPool(t, s, "agents/py")
	markReady(t, s, ps.Created...)
	applyPool(t, s, "py", "python:3.13", spec.PoolSettings{Size: 2, ClaimTTL: "1h0m0s"})
	if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{}); !errors.Is(err, store.ErrNoneReady) {
		t.Fatalf("claim with only outdated sandboxes: %v, want ErrNoneReady", err)
	}
}

// Claims take sandboxes; each sync brings the pool back to size, never
// past max, and says when max holds it below size.
func TestSyncPoolRefillsUpToMax(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 3, Max: 5})
	markReady(t, s, syncPool(t, s, "agents/py").Created...)
	for range 2 {
		if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ps := syncPool(t, s, "agents/py")
	if len(ps.Created) != 2 || ps.Ready != 1 || ps.Pending != 2 || ps.Claimed != 2 || ps.Exhausted {
		t.Fatalf("after 2 claims: %+v; want 2 created, 1 ready, 2 pending, 2 claimed", ps)
	}
	markReady(t, s, ps.Created...)
	for range 3 {
		if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ps = syncPool(t, s, "agents/py")
	if len(ps.Created) != 0 || ps.Claimed != 5 || !ps.Exhausted {
		t.Fatalf("at max: %+v; want nothing created, 5 claimed, exhausted", ps)
	}
	// A claimed sandbox deleted makes room again once it is gone (its
	// job may run until then).
	_, claimed := members(t, s, "py")
	gone, err := s.Delete(t.Context(), claimed[0].Key())
	if err != nil {
		t.Fatal(err)
	}
	if ps = syncPool(t, s, "agents/py"); len(ps.Created) != 0 || ps.Stopping != 1 {
		t.Fatalf("after a delete at max: %+v; want nothing created while it stops", ps)
	}
	if err := s.Finalize(t.Context(), gone.Key(), gone.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	if ps = syncPool(t, s, "agents/py"); len(ps.Created) != 1 || !ps.Exhausted {
		t.Fatalf("after it is gone: %+v; want 1 created, still exhausted (4 claimed + 1 < 3 + 4)", ps)
	}
}

// A template change replaces the unclaimed sandboxes and leaves the
// claimed ones as they are; a smaller size deletes unclaimed ones only.
func TestSyncPoolTemplateChangeAndShrinkSpareClaimed(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 4})
	markReady(t, s, syncPool(t, s, "agents/py").Created...)
	c1, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	markReady(t, s, syncPool(t, s, "agents/py").Created...)
	old, _ := members(t, s, "py")

	applyPool(t, s, "py", "python:3.13", spec.PoolSettings{Size: 4})
	ps := syncPool(t, s, "agents/py")
	if len(ps.Deleted) != 4 || len(ps.Created) != 4 {
		t.Fatalf("template change: %d deleted, %d created; want 4 and 4", len(ps.Deleted), len(ps.Created))
	}
	slices.Sort(ps.Deleted)
	var oldKeys []string
	for _, r := range old {
		oldKeys = append(oldKeys, r.Key())
	}
	slices.Sort(oldKeys)
	if !slices.Equal(ps.Deleted, oldKeys) {
		t.Errorf("deleted %v, want the unclaimed %v", ps.Deleted, oldKeys)
	}
	unclaimed, claimed := members(t, s, "py")
	for _, r := range unclaimed {
		if r.Sandbox.Spec.Image != "python:3.13" {
			t.Errorf("%s runs %q after the template change", r.Key(), r.Sandbox.Spec.Image)
		}
	}
	if len(claimed) != 2 {
		t.Fatalf("%d claimed after the template change, want 2", len(claimed))
	}
	for _, r := range claimed {
		if r.Sandbox.Spec.Image != "python:3.12" || r.Generation != 1 || (r.Key() != c1.Key() && r.Key() != c2.Key()) {
			t.Errorf("claimed %s: image %q generation %d", r.Key(), r.Sandbox.Spec.Image, r.Generation)
		}
	}

	readyKeys := ps.Created[:2]
	markReady(t, s, readyKeys...)
	applyPool(t, s, "py", "python:3.13", spec.PoolSettings{Size: 2})
	ps = syncPool(t, s, "agents/py")
	if len(ps.Deleted) != 2 || len(ps.Created) != 0 || ps.Ready != 2 || ps.Claimed != 2 {
		t.Fatalf("shrink to 2: %+v; want the 2 not Ready deleted, 2 ready and 2 claimed kept", ps)
	}
	for _, k := range ps.Deleted {
		if k == c1.Key() || k == c2.Key() || slices.Contains(readyKeys, k) {
			t.Errorf("shrink deleted %s, a claimed or Ready one", k)
		}
	}
}

// Deleting a pool deletes its unclaimed sandboxes, then the pool once
// they are gone; claimed sandboxes stay.
func TestDeletedPoolGoesAfterItsUnclaimed(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 2})
	markReady(t, s, syncPool(t, s, "agents/py").Created...)
	claimed, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	syncPool(t, s, "agents/py")
	if _, err := s.Delete(t.Context(), "agents/py"); err != nil {
		t.Fatal(err)
	}
	ps := syncPool(t, s, "agents/py")
	if !ps.Deleting || len(ps.Deleted) != 2 || ps.Finalized {
		t.Fatalf("first sync of a deleted pool: %+v; want its 2 unclaimed marked, the pool kept", ps)
	}
	for _, k := range ps.Deleted {
		rec, _ := s.Get(t.Context(), k)
		if err := s.Finalize(t.Context(), k, rec.ResourceVersion); err != nil {
			t.Fatal(err)
		}
	}
	if ps = syncPool(t, s, "agents/py"); !ps.Finalized {
		t.Fatalf("sync after the unclaimed are gone: %+v; want the pool finalized", ps)
	}
	if _, err := s.Get(t.Context(), "agents/py"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pool record after finalizing: %v", err)
	}
	if rec, err := s.Get(t.Context(), claimed.Key()); err != nil || rec.Deleting() {
		t.Errorf("the claimed sandbox after its pool went: %v, deleting %v", err, rec.Deleting())
	}
}

// Pools and sandboxes share names; a pool's sandboxes are its own, so
// neither an apply nor a prune of the apply set touches them.
func TestPoolNamesAndPruneStayApart(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 1})
	ps := syncPool(t, s, "agents/py")
	member := strings.TrimPrefix(ps.Created[0], "agents/")
	for _, tc := range []struct {
		name string
		obj  store.Object
	}{
		{"a sandbox over a pool", store.Object{Sandbox: sandbox("agents", "py", "x", nil)}},
		{"a sandbox over a pool's sandbox", store.Object{Sandbox: sandbox("agents", member, "x", nil)}},
		{"a pool over a pool's sandbox", store.Object{Sandbox: sandbox("agents", member, "x", nil), Pool: &spec.PoolSettings{Size: 1}}},
	} {
		_, err := s.Apply(t.Context(), []store.Object{tc.obj}, store.ApplyOptions{ApplySet: "pools"})
		if !errors.Is(err, store.ErrNameTaken) {
			t.Errorf("%s: %v, want ErrNameTaken", tc.name, err)
		}
	}
	if _, err := s.Apply(t.Context(), objects(sandbox("agents", "plain", "x", nil)), store.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(t.Context(), []store.Object{{Sandbox: sandbox("agents", "plain", "x", nil), Pool: &spec.PoolSettings{Size: 1}}}, store.ApplyOptions{}); !errors.Is(err, store.ErrNameTaken) {
		t.Errorf("a pool over a sandbox: %v, want ErrNameTaken", err)
	}
	// The pool's apply set, pruned with an empty batch: the pool goes,
	// its sandbox is left to the pool.
	res, err := s.Apply(t.Context(), nil, store.ApplyOptions{ApplySet: "pools", Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 1 || res.Objects[0].Key != "agents/py" || !res.Objects[0].Pool {
		t.Fatalf("prune: %+v, want the pool alone", res.Objects)
	}
}

// A claim reaches other instances: the declaration carries it, and two
// declarations that differ only in the claim are not the same.
func TestClaimTravelsInTheDeclaration(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 1})
	ps := syncPool(t, s, "agents/py")
	markReady(t, s, ps.Created...)
	before, _ := s.Get(t.Context(), ps.Created[0])
	claimed, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if before.Declaration().Same(claimed.Declaration()) {
		t.Fatal("a claim left the declaration the same: replication would skip it")
	}
	other := openStore(t, store.Options{})
	pool, _ := s.Get(t.Context(), "agents/py")
	if _, err := other.Import(t.Context(), []store.Declaration{pool.Declaration(), claimed.Declaration()}, store.ImportOptions{RemoveMissing: true}); err != nil {
		t.Fatal(err)
	}
	got, err := other.Get(t.Context(), claimed.Key())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Member.Claimed() || !got.Member.ExpiresAt.Equal(*claimed.Member.ExpiresAt) || got.Sandbox.Labels[store.LabelClaimed] != "true" {
		t.Fatalf("imported %+v, want the claim", got.Member)
	}
	// The other instance, leading now, neither re-creates the claimed
	// sandbox's place twice nor hands it out again.
	markReady(t, other, claimed.Key())
	if _, err := other.Claim(t.Context(), "agents/py", store.ClaimOptions{}); !errors.Is(err, store.ErrNoneReady) {
		t.Fatalf("claim on the copy: %v, want ErrNoneReady (the only sandbox is claimed)", err)
	}
	if ps := syncPool(t, other, "agents/py"); len(ps.Created) != 1 || ps.Claimed != 1 {
		t.Fatalf("sync on the copy: %+v, want 1 created beside 1 claimed", ps)
	}
}

// A claim hands out only what the running loop has observed; a store
// filled by Import (no index yet) still serves claims from its records.
func TestClaimOnlyFreshAndWithoutTheIndex(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 2})
	ps := syncPool(t, s, "agents/py")
	markReady(t, s, ps.Created...)
	none := func(string, uint64) bool { return false }
	if _, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{Fresh: none}); !errors.Is(err, store.ErrNoneReady) {
		t.Fatalf("claim with no status observed by this run: %v, want ErrNoneReady", err)
	}
	only := func(k string, _ uint64) bool { return k == ps.Created[1] }
	rec, err := s.Claim(t.Context(), "agents/py", store.ClaimOptions{Fresh: only})
	if err != nil || rec.Key() != ps.Created[1] {
		t.Fatalf("claim with one observed: %v %s, want %s", err, rec.Key(), ps.Created[1])
	}

	// Another instance's store, filled from the declarations alone.
	other := openStore(t, store.Options{})
	var decls []store.Declaration
	for _, k := range []string{"agents/py", ps.Created[0]} {
		r, err := s.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		decls = append(decls, r.Declaration())
	}
	if _, err := other.Import(t.Context(), decls, store.ImportOptions{RemoveMissing: true}); err != nil {
		t.Fatal(err)
	}
	markReady(t, other, ps.Created[0])
	if rec, err := other.Claim(t.Context(), "agents/py", store.ClaimOptions{}); err != nil || rec.Key() != ps.Created[0] {
		t.Fatalf("claim on an imported store before any sync: %v %s", err, rec.Key())
	}
}

// max bounds what may run: sandboxes on their way out count until gone.
func TestSyncPoolMaxCountsSandboxesOnTheirWayOut(t *testing.T) {
	s := openStore(t, store.Options{})
	applyPool(t, s, "py", "python:3.12", spec.PoolSettings{Size: 2, Max: 2})
	old := syncPool(t, s, "agents/py").Created
	applyPool(t, s, "py", "python:3.13", spec.PoolSettings{Size: 2, Max: 2})
	ps := syncPool(t, s, "agents/py")
	if len(ps.Deleted) != 2 || len(ps.Created) != 0 || !ps.Exhausted || ps.Stopping != 2 {
		t.Fatalf("template change at max: %+v; want the 2 old marked, none created while they stop", ps)
	}
	for _, k := range old {
		rec, _ := s.Get(t.Context(), k)
		if err := s.Finalize(t.Context(), k, rec.ResourceVersion); err != nil {
			t.Fatal(err)
		}
	}
	if ps = syncPool(t, s, "agents/py"); len(ps.Created) != 2 || ps.Exhausted {
		t.Fatalf("once the old are gone: %+v; want 2 created", ps)
	}
}
