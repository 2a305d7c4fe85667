package reconcile

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// cachedController starts a controller as cmd/controller wires it: the
// reconciler reads the watch-fed cache its watcher keeps.
func (h *harness) cachedController(mut ...func(*Options)) *running {
	h.t.Helper()
	cache := nomad.NewCache(h.st.StoreID())
	h.rec = NewReconciler(h.st, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}, Cache: cache}, nil, h.now)
	return h.startController(append([]func(*Options){func(o *Options) {
		o.Reconciler = h.rec
		o.Watcher = nomad.NewWatcher(h.nc, nomad.WatchOptions{Owner: h.st.StoreID(), Cache: cache, FirstLineTimeout: 5 * time.Second,
			Backoff: nomad.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond}})
	}}, mut...)...)
}

// reads counts the job and allocation reads the test server received.
func (h *harness) reads() int {
	r := h.srv.Requests()
	return r["GET /v1/job/{id}"] + r["GET /v1/job/{id}/allocations"] + r["GET /v1/allocation/{id}"]
}

// Reconciles read Nomad's state from the watch-fed cache: converging
// makes one write per sandbox and no read of a job or its allocations, a
// full resync makes no request at all, and a repair reads the one job
// that changed.
func TestReconcileReadsTheCacheNotNomad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		const n = 20
		src, keys := fleet(n)
		h.apply(src)
		h.srv.ResetRequests()
		r := h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.eventually("every sandbox running", h.allPhase(keys, store.PhaseRunning))
		if w := h.writes(); w != n {
			t.Errorf("converging %d sandboxes took %d writes, want %d", n, w, n)
		}
		if rd := h.reads(); rd != 0 {
			t.Errorf("converging read jobs or allocations %d times, want 0: %v", rd, h.srv.Requests())
		}

		// A full resync, as the periodic one: every sandbox looked at
		// again, and Nomad not asked anything.
		time.Sleep(time.Minute) // let the rechecks of convergence pass
		synctest.Wait()
		h.srv.ResetRequests()
		for _, k := range keys {
			r.c.o.Queue.Add(k)
		}
		h.eventually("the queue to drain", func() bool { return r.c.o.Queue.Len() == 0 })
		synctest.Wait()
		if got := h.srv.Requests(); len(got) != 0 {
			t.Errorf("a resync of %d unchanged sandboxes made requests %v, want none", n, got)
		}

		// A repair: the changed job is read once, then written once.
		// h.job reads through HTTP and RunJob does not, so the counts
		// start after the read and before the change: the controller may
		// repair the job as soon as RunJob returns.
		j := h.job("agentkernel-s004")
		j.TaskGroups[0].Tasks[0].User = "root"
		h.srv.ResetRequests()
		if _, _, err := h.srv.RunJob(j); err != nil {
			t.Fatal(err)
		}
		h.eventually("the change repaired", func() bool {
			return h.srv.Requests()["PUT /v1/jobs"] >= 1
		})
		synctest.Wait()
		if w := h.srv.Requests()["PUT /v1/jobs"]; w != 1 {
			t.Errorf("the repair wrote %d times, want 1", w)
		}
		// The event that told of the change carried the whole job.
		if rd := h.reads(); rd > 1 {
			t.Errorf("the repair read %d times, want at most 1 (the changed job, whole)", rd)
		}
		if u := h.job("agentkernel-s004").TaskGroups[0].Tasks[0].User; u != "" {
			t.Errorf("user %q after the repair", u)
		}
		h.srv.ResetRequests()
		h.eventually("s004 running", h.allPhase([]string{"default/s004"}, store.PhaseRunning))
		time.Sleep(time.Minute)
		synctest.Wait()
		if rd := h.reads(); rd != 0 {
			t.Errorf("after the repair the controller read %d times, want 0", rd)
		}

		// Stopping and deleting: a write each, no read.
		h.srv.ResetRequests()
		h.apply(`sandbox "s005" {
  image = "alpine:3"
  state = "stopped"
}`)
		h.eventually("s005 stopped", h.allPhase([]string{"default/s005"}, store.PhaseStopped))
		if _, err := h.st.Delete(t.Context(), "default/s006"); err != nil {
			t.Fatal(err)
		}
		h.eventually("s006 gone", func() bool { _, err := h.st.Get(t.Context(), "default/s006"); return err != nil })
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := h.srv.Requests(); got["DELETE /v1/job/{id}"] != 2 || h.reads() != 0 {
			t.Errorf("a stop and a delete made requests %v; want 2 DELETEs (stop, purge) and no read", got)
		}
	})
}

// Readiness means the current version runs: after each of many updates,
// the first status that says Ready names an allocation of the job's
// current version, though Nomad places it only after the register
// answers and the previous version's allocation still runs meanwhile.
func TestReadyAfterEveryUpdateNamesTheCurrentVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// As recorded on a real agent: Nomad plans tens of
		// milliseconds after the register answers, and the task runs
		// about half a second later.
		h := newHarnessOn(t, nomadtest.Options{EvalDelay: 30 * time.Millisecond, SchedulingDelay: 500 * time.Millisecond, Drivers: []string{"docker"}})
		h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		updates := 1000
		if raceEnabled {
			updates = 100
		}
		stale := 0
		for i := range updates + 1 {
			h.apply(fmt.Sprintf("sandbox \"box\" {\n  image     = \"alpine:3\"\n  memory_mb = %d\n}\n", 256+i%2*256))
			gen := h.record("default/box").Generation
			var st store.Status
			h.eventually("ready", func() bool {
				rec := h.record("default/box")
				c, _ := rec.Status.Condition(CondReady)
				st = rec.Status
				return rec.Status.ObservedGeneration == gen && c.Status == store.ConditionTrue
			})
			job := h.job("agentkernel-box")
			a, _, err := h.nc.API().Allocations().Info(st.AllocID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.Job == nil || *a.Job.Version != *job.Version || deref(st.JobVersion) != *job.Version {
				stale++
				t.Errorf("update %d: Ready names allocation %.8s of version %d; the job is at version %d", i, st.AllocID, *a.Job.Version, *job.Version)
			}
		}
		if stale != 0 {
			t.Errorf("%d of %d updates reported Ready for an older version", stale, updates)
		}
	})
}
