package reconcile

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// gcController starts a controller that decides garbage collection as
// cmd/controller's does when it runs alone: on a reconciler of its own,
// with holds kept in the store.
func (h *harness) gcController() *running {
	h.t.Helper()
	h.rec = NewReconciler(h.st, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
	return h.startController(func(o *Options) {
		o.Reconciler = h.rec
		o.GCHolds = h.st
	})
}

// settle lets every queued key be reconciled (fake time).
func settle() {
	time.Sleep(time.Minute)
	synctest.Wait()
}

func TestControllerWithRestoredOlderStoreNeverPurges(t *testing.T) {
	synctest.Test(t, testControllerWithRestoredOlderStoreNeverPurges)
}

// A data dir restored from a backup is behind what was applied since: the
// sandboxes applied after the backup are not in it, and one updated since
// has its old spec. Garbage collection would purge the first and the sync
// would revert the second. Both wait for an operator, across restarts.
func testControllerWithRestoredOlderStoreNeverPurges(t *testing.T) {
	h := newHarness(t)
	h.apply(`sandbox "a" {
  image = "alpine:3"
}`)
	r := h.gcController()
	h.eventually("a running", h.allPhase([]string{"default/a"}, store.PhaseRunning))
	var backup bytes.Buffer
	if _, err := h.st.Backup(t.Context(), &backup); err != nil {
		t.Fatal(err)
	}
	h.apply(`sandbox "a" {
  image     = "alpine:3"
  memory_mb = 1024
}
sandbox "b" {
  image = "alpine:3"
}
sandbox "c" {
  image = "alpine:3"
}`)
	h.eventually("every sandbox running", h.allPhase([]string{"default/a", "default/b", "default/c"}, store.PhaseRunning))
	owner := h.st.StoreID()
	r.stop()
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := store.Restore(&backup, dir); err != nil {
		t.Fatal(err)
	}
	reopen := func() {
		var err error
		if h.st, err = store.Open(dir, store.Options{NoSync: true, Now: h.now}); err != nil {
			t.Fatal(err)
		}
		if h.st.StoreID() != owner {
			t.Fatal("the restored store has another owner ID")
		}
	}
	reopen()
	h.srv.ResetRequests()
	r = h.gcController()
	h.eventually("the initial list", r.c.InitialListDone)
	settle()
	check := func(when string) {
		t.Helper()
		for _, id := range []string{"agentkernel-b", "agentkernel-c"} {
			if h.job(id) == nil {
				t.Errorf("%s: %s, applied after the backup, was purged", when, id)
			}
		}
		if mem := *h.job("agentkernel-a").TaskGroups[0].Tasks[0].Resources.MemoryMB; mem != 1024 {
			t.Errorf("%s: agentkernel-a reverted to the backup's spec (memory %d, want 1024)", when, mem)
		}
		if w := h.writes(); w != 0 {
			t.Errorf("%s: %d Nomad writes, want none", when, w)
		}
		if st := r.c.GCState(); st.Enabled || st.Hold == nil || st.Hold.JobCount != 3 {
			t.Errorf("%s: gc state %+v; want held, naming the 3 jobs written after the backup", when, st)
		}
		if c, _ := h.record("default/a").Status.Condition(CondSynced); c.Reason != ReasonStoreBehind {
			t.Errorf("%s: sandbox a's Synced condition %+v, want %s", when, c, ReasonStoreBehind)
		}
	}
	check("first start")

	// The held store records statuses as it runs; a restart must still
	// hold.
	r.stop()
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	reopen()
	r = h.gcController()
	h.eventually("the initial list", r.c.InitialListDone)
	settle()
	check("after a restart")

	// The operator confirms the store: it is the desired state now.
	if _, err := r.c.ConfirmGC(t.Context()); err != nil {
		t.Fatal(err)
	}
	settle()
	for _, id := range []string{"agentkernel-b", "agentkernel-c"} {
		if h.job(id) != nil {
			t.Errorf("%s not purged after the operator confirmed the store", id)
		}
	}
	if mem := *h.job("agentkernel-a").TaskGroups[0].Tasks[0].Resources.MemoryMB; mem == 1024 {
		t.Error("agentkernel-a not brought to the store's spec after the confirmation")
	}
	if _, err := r.c.ConfirmGC(t.Context()); !errors.Is(err, ErrNothingToConfirm) {
		t.Errorf("a second confirmation: %v, want ErrNothingToConfirm", err)
	}
	// Confirmed for good: the next start collects garbage at once.
	r.stop()
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	reopen()
	r = h.gcController()
	h.eventually("the initial list", r.c.InitialListDone)
	if st := r.c.GCState(); !st.Enabled {
		t.Errorf("after the confirmation a restart held gc again: %+v", st)
	}
}

func TestControllerWithEmptyStoreHoldsUntilConfirmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		for _, name := range []string{"a", "b"} {
			if _, _, err := h.srv.RunJob(renderFor(t, name, h.st.StoreID())); err != nil {
				t.Fatal(err)
			}
		}
		r := h.gcController()
		h.eventually("the initial list", r.c.InitialListDone)
		// A sandbox applied to the empty store must not make the next
		// start take the store for whole.
		h.apply(`sandbox "c" {
  image = "alpine:3"
}`)
		settle()
		r.stop()
		r = h.gcController()
		h.eventually("the initial list", r.c.InitialListDone)
		settle()
		for _, id := range []string{"agentkernel-a", "agentkernel-b"} {
			if h.job(id) == nil {
				t.Errorf("%s purged by a controller whose store was empty when it first saw the job", id)
			}
		}
		if st := r.c.GCState(); st.Enabled || st.Hold == nil {
			t.Fatalf("gc state %+v, want held", st)
		}
		if _, err := r.c.ConfirmGC(t.Context()); err != nil {
			t.Fatal(err)
		}
		settle()
		for _, id := range []string{"agentkernel-a", "agentkernel-b"} {
			if h.job(id) != nil {
				t.Errorf("%s not purged after the confirmation", id)
			}
		}
		if h.job("agentkernel-c") == nil {
			t.Error("the declared sandbox's job was purged")
		}
	})
}

// Under -ha the copy decides: an incomplete one keeps GC off, and no
// confirmation here lifts that.
func TestConfirmCannotLiftAnIncompleteCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.rec = NewReconciler(h.st, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
		r := h.startController(func(o *Options) { o.Reconciler = h.rec; o.DisableGC = true })
		h.eventually("the initial list", r.c.InitialListDone)
		if _, err := r.c.ConfirmGC(t.Context()); !errors.Is(err, ErrCannotConfirm) {
			t.Errorf("ConfirmGC = %v, want ErrCannotConfirm", err)
		}
		if st := r.c.GCState(); st.Enabled {
			t.Error("gc enabled on an incomplete copy")
		}
	})
}

// A restored store whose record has expired by its old ttl (the user has
// since extended it) does not delete the sandbox while garbage
// collection is held.
func TestRestoredStoreDoesNotExpireAByNowLongerTTLWhileHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.apply(`sandbox "a" {
  image = "alpine:3"
  ttl   = "1h"
}`)
		r := h.gcController()
		h.eventually("a running", h.allPhase([]string{"default/a"}, store.PhaseRunning))
		var backup bytes.Buffer
		if _, err := h.st.Backup(t.Context(), &backup); err != nil {
			t.Fatal(err)
		}
		// The user extends the ttl.
		h.apply(`sandbox "a" {
  image = "alpine:3"
  ttl   = "72h"
}`)
		h.eventually("a running gen 2", h.allPhase([]string{"default/a"}, store.PhaseRunning))
		owner := h.st.StoreID()
		r.stop()
		_ = h.st.Close()
		dir := filepath.Join(t.TempDir(), "restored")
		if err := store.Restore(&backup, dir); err != nil {
			t.Fatal(err)
		}
		var err error
		if h.st, err = store.Open(dir, store.Options{NoSync: true, Now: h.now}); err != nil {
			t.Fatal(err)
		}
		if h.st.StoreID() != owner {
			t.Fatal("owner")
		}
		h.advance(2 * time.Hour) // past the old ttl, well within the new one
		h.srv.ResetRequests()
		r = h.gcController()
		h.eventually("initial list", r.c.InitialListDone)
		settle()
		settle()
		if h.job("agentkernel-a") == nil {
			t.Errorf("job purged by a restored store while gc is held (writes=%d)", h.writes())
		}
		if rec := h.record("default/a"); rec.Deleting() {
			t.Error("the restored record was marked for deletion by its old ttl")
		}
	})
}

// A backup taken while sandbox a was being deleted; a was finalized and
// applied again afterwards. The restored store still marks a for
// deletion: it must not purge the job the newer store declared.
func TestRestoredStoreDoesNotPurgeAJobCreatedAfterItsDeletionMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.apply(`sandbox "a" {
  image = "alpine:3"
}`)
		// No controller yet: mark for deletion and back up, as a backup taken mid-delete.
		r := h.gcController()
		h.eventually("a registered", func() bool { return h.job("agentkernel-a") != nil })
		r.stop()
		if _, err := h.st.Delete(t.Context(), "default/a"); err != nil {
			t.Fatal(err)
		}
		var backup bytes.Buffer
		if _, err := h.st.Backup(t.Context(), &backup); err != nil {
			t.Fatal(err)
		}
		r = h.gcController()
		h.eventually("a finalized", func() bool { _, err := h.st.Get(t.Context(), "default/a"); return err != nil })
		settle()
		h.apply(`sandbox "a" {
  image = "alpine:3"
}`)
		h.eventually("a running again", h.allPhase([]string{"default/a"}, store.PhaseRunning))
		owner := h.st.StoreID()
		r.stop()
		_ = h.st.Close()
		dir := filepath.Join(t.TempDir(), "restored")
		if err := store.Restore(&backup, dir); err != nil {
			t.Fatal(err)
		}
		var err error
		if h.st, err = store.Open(dir, store.Options{NoSync: true, Now: h.now}); err != nil {
			t.Fatal(err)
		}
		if h.st.StoreID() != owner {
			t.Fatal("owner")
		}
		r = h.gcController()
		h.eventually("initial list", r.c.InitialListDone)
		settle()
		if h.job("agentkernel-a") == nil {
			t.Errorf("job re-created after the backup was purged by the restored store")
		}
	})
}

// StoreBehind says to apply the sandbox's current declaration: doing so
// lifts it for that sandbox, while the hold stays for the rest.
func TestApplyingTheCurrentDeclarationLiftsStoreBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		src := `sandbox "a" {
  image = "alpine:3"
}`
		h.apply(src)
		r := h.gcController()
		h.eventually("a running", h.allPhase([]string{"default/a"}, store.PhaseRunning))
		var backup bytes.Buffer
		if _, err := h.st.Backup(t.Context(), &backup); err != nil {
			t.Fatal(err)
		}
		h.apply(`sandbox "a" {
  image     = "alpine:3"
  memory_mb = 1024
}`)
		h.eventually("a gen2", h.allPhase([]string{"default/a"}, store.PhaseRunning))
		owner := h.st.StoreID()
		r.stop()
		_ = h.st.Close()
		dir := filepath.Join(t.TempDir(), "restored")
		if err := store.Restore(&backup, dir); err != nil {
			t.Fatal(err)
		}
		var err error
		if h.st, err = store.Open(dir, store.Options{NoSync: true, Now: h.now}); err != nil {
			t.Fatal(err)
		}
		if h.st.StoreID() != owner {
			t.Fatal("owner")
		}
		r = h.gcController()
		h.eventually("initial list", r.c.InitialListDone)
		settle()
		if c, _ := h.record("default/a").Status.Condition(CondSynced); c.Reason != ReasonStoreBehind {
			t.Fatalf("restored store: Synced %+v, want %s", c, ReasonStoreBehind)
		}
		h.advance(time.Minute)
		h.apply(`sandbox "a" {
  image     = "alpine:3"
  memory_mb = 1024
}`) // the current declaration, as the message says
		settle()
		if c, _ := h.record("default/a").Status.Condition(CondSynced); c.Reason == ReasonStoreBehind {
			t.Errorf("after applying the current declaration as the message says, still %s", c.Reason)
		}
		if st := r.c.GCState(); st.Enabled {
			t.Error("applying one sandbox released the hold")
		}
	})
}

// statusLostStore drops status writes, as a controller killed between its
// Nomad write and its status write leaves things.
type statusLostStore struct{ *store.Store }

func (statusLostStore) UpdateStatus(context.Context, string, store.Status, ...store.Event) error {
	return nil
}

// A controller killed after its own register but before recording it
// leaves a job written after the store's newest recorded Nomad state.
// That is not a store restored from an older backup: at the next start
// garbage collection is not held, whether the sandbox was changed again
// or marked for deletion meanwhile.
func TestCrashAfterOwnWriteIsNotTakenForARestoredStore(t *testing.T) {
	tests := []struct {
		name  string
		after func(h *harness)
	}{
		{"changed again", func(h *harness) {
			h.apply(`sandbox "a" {
  image     = "alpine:3"
  memory_mb = 2048
}`)
		}},
		{"marked for deletion", func(h *harness) {
			if _, err := h.st.Delete(h.t.Context(), "default/a"); err != nil {
				h.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				h.apply(`sandbox "a" {
  image = "alpine:3"
}
sandbox "b" {
  image = "alpine:3"
}`)
				h.reconcile("default/b") // the store records Nomad's state
				h.apply(`sandbox "a" {
  image     = "alpine:3"
  memory_mb = 1024
}`)
				// a's register goes through; its status is lost.
				lost := NewReconciler(statusLostStore{h.st}, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
				if _, err := lost.Reconcile(t.Context(), "default/a"); err != nil {
					t.Fatal(err)
				}
				tt.after(h)
				r := h.gcController()
				h.eventually("the initial list", r.c.InitialListDone)
				if st := r.c.GCState(); !st.Enabled {
					t.Fatalf("garbage collection held after a crash lost the status of the controller's own write: %s", st.Reason)
				}
			})
		})
	}
}
