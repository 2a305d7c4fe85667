package reconcile

import (
	"bytes"
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
