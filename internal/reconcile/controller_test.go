package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// running is a controller started on a harness's store and test server.
type running struct {
	c      *Controller
	cancel context.CancelFunc
	done   chan error
}

func (h *harness) startController(mut ...func(*Options)) *running {
	h.t.Helper()
	watcher := nomad.NewWatcher(h.nc, nomad.WatchOptions{Owner: h.st.StoreID(), FirstLineTimeout: 5 * time.Second,
		// The first list is the watcher's: it retries as fast as the loop.
		Backoff: nomad.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond}})
	o := Options{
		Reconciler: h.rec,
		Queue:      NewQueue(QueueOptions{BaseDelay: time.Millisecond, MaxDelay: 50 * time.Millisecond}),
		Store:      h.st,
		Watcher:    watcher,
		Owner:      h.st.StoreID(),
		Workers:    4,
		Backoff:    nomad.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond},
	}
	for _, m := range mut {
		m(&o)
	}
	r := &running{c: New(o), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(h.t.Context())
	r.cancel = cancel
	go func() { r.done <- r.c.Run(ctx) }()
	h.t.Cleanup(func() { r.stop() })
	return r
}

func (r *running) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// eventually waits until cond holds, re-checking on every store change;
// the deadline only keeps a broken controller from hanging the test.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	for {
		rev, _ := h.st.Revision(ctx)
		if cond() {
			return
		}
		w, err := h.st.Watch(ctx, rev)
		if err != nil {
			h.t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-w.Changes():
		case <-time.After(100 * time.Millisecond): // Nomad-side changes do not touch the store
		case <-ctx.Done():
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *harness) allPhase(keys []string, phase store.Phase) func() bool {
	return func() bool {
		for _, k := range keys {
			rec, err := h.st.Get(h.t.Context(), k)
			if err != nil || rec.Status.Phase != phase || rec.Status.ObservedGeneration != rec.Generation {
				return false
			}
		}
		return true
	}
}

func fleet(n int) (src string, keys []string) {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "sandbox \"s%03d\" {\n  image = \"alpine:3\"\n}\n", i)
		keys = append(keys, fmt.Sprintf("default/s%03d", i))
	}
	return b.String(), keys
}

func TestControllerConvergesRepairsAndDeletes(t *testing.T) {
	synctest.Test(t, testControllerConvergesRepairsAndDeletes)
}

func testControllerConvergesRepairsAndDeletes(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(5)
	h.apply(src)
	r := h.startController()
	h.eventually("every sandbox running", h.allPhase(keys, store.PhaseRunning))
	if w := h.writes(); w != 5 {
		t.Errorf("converging 5 sandboxes took %d Nomad writes, want 5", w)
	}

	// Idle: the controller must not write while nothing changes.
	h.srv.ResetRequests()
	for range 3 {
		for _, k := range keys {
			r.c.o.Queue.Add(k)
		}
	}
	h.eventually("the queue to drain", func() bool { return r.c.o.Queue.Len() == 0 })
	if w := h.writes(); w != 0 {
		t.Errorf("%d Nomad writes for unchanged sandboxes", w)
	}

	h.srv.StopJob("default", "agentkernel-s001", false)
	h.eventually("the stopped job repaired", func() bool {
		j := h.job("agentkernel-s001")
		return j != nil && (j.Stop == nil || !*j.Stop)
	})

	if _, err := h.st.Delete(t.Context(), "default/s002"); err != nil {
		t.Fatal(err)
	}
	h.eventually("the deleted sandbox finalized", func() bool {
		_, err := h.st.Get(t.Context(), "default/s002")
		return err != nil
	})
	if h.job("agentkernel-s002") != nil {
		t.Error("job of the deleted sandbox still in Nomad")
	}
}

func TestControllerStartsWhileNomadIsDown(t *testing.T) {
	synctest.Test(t, testControllerStartsWhileNomadIsDown)
}

func testControllerStartsWhileNomadIsDown(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(2)
	h.apply(src)
	h.mem.SetDown(true)
	r := h.startController()
	time.Sleep(10 * time.Second) // on the bubble's clock: retries back off meanwhile
	if r.c.InitialListDone() {
		t.Fatal("initial list done while Nomad is down")
	}
	h.mem.SetDown(false)
	h.eventually("convergence after Nomad came back", h.allPhase(keys, store.PhaseRunning))
	if !r.c.InitialListDone() {
		t.Error("initial list not done after convergence")
	}
}

func TestControllerCollectsGarbageAfterInitialList(t *testing.T) {
	synctest.Test(t, testControllerCollectsGarbageAfterInitialList)
}

func testControllerCollectsGarbageAfterInitialList(t *testing.T) {
	h := newHarness(t)
	orphan := renderFor(t, "orphan", h.st.StoreID())
	if _, _, err := h.srv.RunJob(orphan); err != nil {
		t.Fatal(err)
	}
	foreign := renderFor(t, "foreign", "")
	delete(foreign.Meta, nomad.MetaOwner)
	if _, _, err := h.srv.RunJob(foreign); err != nil {
		t.Fatal(err)
	}
	h.startController()
	h.eventually("the orphan purged", func() bool { return h.job("agentkernel-orphan") == nil })
	if h.job("agentkernel-foreign") == nil {
		t.Error("a foreign job was purged")
	}
}

func TestControllerSurvivesFaults(t *testing.T) {
	synctest.Test(t, testControllerSurvivesFaults)
}

func testControllerSurvivesFaults(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(6)
	h.apply(src)
	h.srv.FailRequests(nomadtest.ErrorFault{Status: 500, Body: "rpc error: EOF", Count: 20})
	h.startController()
	h.eventually("convergence through 5xx bursts", h.allPhase(keys, store.PhaseRunning))
	h.srv.CutEventStreams()
	h.srv.StopJob("default", "agentkernel-s003", true)
	h.eventually("the purged job recreated after a cut stream", func() bool { return h.job("agentkernel-s003") != nil })
	h.eventually("all running again", h.allPhase(keys, store.PhaseRunning))
}

// TestCrashDuringConvergence cuts the controller off at random points of
// a convergence — its context cancelled with no grace for in-flight
// reconciles, as a killed process would be — then reopens the same data
// dir with a fresh controller: exactly one job per sandbox, nothing lost,
// nothing foreign touched.
func TestCrashDuringConvergence(t *testing.T) {
	synctest.Test(t, testCrashDuringConvergence)
}

func testCrashDuringConvergence(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	h := newHarness(t)
	dataDir := filepath.Dir(h.st.Path())
	storeID := h.st.StoreID()
	foreign := renderFor(t, "s007", "")
	delete(foreign.Meta, nomad.MetaOwner)
	if _, _, err := h.srv.RunJob(foreign); err != nil {
		t.Fatal(err)
	}
	foreignBefore := h.job("agentkernel-s007")
	src, keys := fleet(20)
	h.apply(src)

	for i := range 6 {
		if err := h.st.Close(); err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(dataDir, store.Options{NoSync: true, Now: h.now})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", i, err)
		}
		if st.StoreID() != storeID {
			t.Fatalf("round %d: store ID changed", i)
		}
		h.st = st
		h.rec = NewReconciler(st, h.nc, Config{Render: nomad.RenderOptions{Owner: storeID}}, nil, h.now)
		if i == 5 {
			break
		}
		r := h.startController(func(o *Options) { o.ShutdownTimeout = time.Nanosecond })
		target := int64(rng.IntN(8))
		h.eventually(fmt.Sprintf("round %d progress", i), func() bool { return h.rec.Writes() >= target || h.writes() >= 19 })
		r.stop()
	}
	h.startController()
	ours := append(append([]string(nil), keys[:7]...), keys[8:]...)
	h.eventually("convergence after the crashes", h.allPhase(ours, store.PhaseRunning))
	jobs, _, err := h.nc.ListOwned(t.Context(), "*", storeID)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 19 {
		t.Errorf("%d owned jobs, want exactly one per sandbox of ours (19)", len(jobs))
	}
	if after := h.job("agentkernel-s007"); *after.JobModifyIndex != *foreignBefore.JobModifyIndex || after.Meta[nomad.MetaOwner] != "" {
		t.Error("the foreign job was touched")
	}
	h.expectStatus("default/s007", store.PhaseConflict, store.ConditionFalse)
	for _, k := range keys {
		if _, err := h.st.Get(t.Context(), k); err != nil {
			t.Errorf("sandbox %s lost: %v", k, err)
		}
	}
}

// TestControllerRelistCatchesWhatTheStreamSkipped purges a job while the
// controller's event stream is away and pushes Nomad's index past its
// event buffer: the purge is never streamed, and only the relist that
// follows the reconnection can reveal the missing job.
func TestControllerRelistCatchesWhatTheStreamSkipped(t *testing.T) {
	synctest.Test(t, testControllerRelistCatchesWhatTheStreamSkipped)
}

func testControllerRelistCatchesWhatTheStreamSkipped(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(3)
	h.apply(src)
	h.startController(func(o *Options) { o.ResyncPeriod = time.Hour })
	h.eventually("every sandbox running", h.allPhase(keys, store.PhaseRunning))
	// Let the rechecks left from convergence (PendingRecheck) fire first,
	// so that only the relist can bring the purged job back in time.
	time.Sleep(2 * DefaultPendingRecheck)
	h.mem.SetDown(true) // cuts the event stream too
	h.srv.StopJob("default", "agentkernel-s001", true)
	h.srv.JumpIndex(1000)
	time.Sleep(time.Second)
	h.mem.SetDown(false)
	time.Sleep(DefaultPendingRecheck / 3) // reconnect, relist and reconcile: well within
	if h.job("agentkernel-s001") == nil {
		t.Fatal("the purged job was not recreated after the relist")
	}
}

// TestControllerRelistCatchesAnAllocationThatDiedWhileTheStreamWasAway
// fails a running sandbox's task while the controller's event stream is
// away and pushes Nomad's index past its event buffer: the job itself is
// unchanged, so only the allocations listed with the relist can show that
// the sandbox is no longer running, well before any resync and before
// Nomad reschedules it.
func TestControllerRelistCatchesAnAllocationThatDiedWhileTheStreamWasAway(t *testing.T) {
	synctest.Test(t, testControllerRelistCatchesAnAllocationThatDiedWhileTheStreamWasAway)
}

func testControllerRelistCatchesAnAllocationThatDiedWhileTheStreamWasAway(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(3)
	h.apply(src)
	h.startController(func(o *Options) { o.ResyncPeriod = time.Hour })
	h.eventually("every sandbox running", h.allPhase(keys, store.PhaseRunning))
	time.Sleep(2 * DefaultPendingRecheck) // let the rechecks left from convergence fire first
	before := h.record("default/s001").Status
	h.mem.SetDown(true) // cuts the event stream too
	if err := h.srv.FailTask("default", "agentkernel-s001"); err != nil {
		t.Fatal(err)
	}
	h.srv.JumpIndex(1000)
	time.Sleep(time.Second)
	h.mem.SetDown(false)
	// Reconnect, relist and reconcile: well within the 15 s before Nomad
	// reschedules the allocation, which the stream would report.
	time.Sleep(DefaultPendingRecheck / 3)
	after := h.record("default/s001").Status
	if after.Phase != store.PhaseFailed || after.AllocID != before.AllocID {
		t.Errorf("status %s with allocation %s after the relist, want %s with the failed allocation %s",
			after.Phase, after.AllocID, store.PhaseFailed, before.AllocID)
	}
}

// compactedOnce is a store whose change feed is compacted between the
// first list and the first watch that follows it.
type compactedOnce struct {
	*store.Store
	done atomic.Bool
}

func (s *compactedOnce) Watch(ctx context.Context, since uint64) (*store.Watcher, error) {
	if s.done.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("watch from revision %d: %w", since, store.ErrCompacted)
	}
	return s.Store.Watch(ctx, since)
}

func TestControllerListsAgainWhenTheFeedIsCompactedRightAfterTheList(t *testing.T) {
	synctest.Test(t, testControllerListsAgainWhenTheFeedIsCompactedRightAfterTheList)
}

// A feed compacted between the list and the watch is the same news as a
// watcher that fell behind: list again, never stop the controller.
func testControllerListsAgainWhenTheFeedIsCompactedRightAfterTheList(t *testing.T) {
	h := newHarness(t)
	src, keys := fleet(2)
	h.apply(src)
	r := h.startController(func(o *Options) { o.Store = &compactedOnce{Store: h.st} })
	running := func() {
		select {
		case err := <-r.done:
			r.done <- err // for the cleanup's stop
			t.Fatalf("the controller stopped: %v", err)
		default:
		}
	}
	h.eventually("every sandbox running", func() bool { running(); return h.allPhase(keys, store.PhaseRunning)() })
	// The change feed is followed: a sandbox declared now is run too.
	src, keys = fleet(3)
	h.apply(src)
	h.eventually("the new sandbox running", func() bool { running(); return h.allPhase(keys, store.PhaseRunning)() })
}

func TestControllerWithEmptyStoreNeverPurges(t *testing.T) {
	synctest.Test(t, testControllerWithEmptyStoreNeverPurges)
}

// An empty store beside owned jobs is a lost data dir: the controller
// reports it and purges nothing.
func testControllerWithEmptyStoreNeverPurges(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b"} {
		if _, _, err := h.srv.RunJob(renderFor(t, name, h.st.StoreID())); err != nil {
			t.Fatal(err)
		}
	}
	// A reconciler as the controller builds it: garbage collection is
	// the controller's to allow.
	h.rec = NewReconciler(h.st, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
	r := h.startController(func(o *Options) { o.Reconciler = h.rec })
	h.eventually("the initial list", r.c.InitialListDone)
	time.Sleep(time.Minute) // fake time: let every queued key be reconciled
	synctest.Wait()
	for _, id := range []string{"agentkernel-a", "agentkernel-b"} {
		if h.job(id) == nil {
			t.Errorf("%s purged by a controller whose store was empty", id)
		}
	}
	if w := h.writes(); w != 0 {
		t.Errorf("%d Nomad writes, want none", w)
	}
}

func TestControllerStopsAtOnceOnAbortCause(t *testing.T) {
	synctest.Test(t, testControllerStopsAtOnceOnAbortCause)
}

// A context cancelled with a cause other than a plain cancel (lost
// leadership) stops in-flight reconciles at once, without the grace a
// shutdown gets, and no Nomad write follows.
func testControllerStopsAtOnceOnAbortCause(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancelCause(t.Context())
	c := New(Options{
		Reconciler:      h.rec,
		Queue:           NewQueue(QueueOptions{BaseDelay: time.Millisecond, MaxDelay: 50 * time.Millisecond}),
		Store:           h.st,
		Watcher:         nomad.NewWatcher(h.nc, nomad.WatchOptions{Owner: h.st.StoreID()}),
		Owner:           h.st.StoreID(),
		Backoff:         nomad.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond},
		ShutdownTimeout: time.Hour,
	})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	h.eventually("the initial list", c.InitialListDone)
	h.srv.SetLatency(time.Hour) // every Nomad request from now on hangs
	src, _ := fleet(3)
	h.apply(src)
	time.Sleep(time.Second) // workers are now waiting on Nomad
	synctest.Wait()
	start := time.Now()
	cancel(fmt.Errorf("lost the lock"))
	<-done
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("Run returned %s after an abort cause; want at once (shutdown grace is an hour)", waited)
	}
	h.srv.SetLatency(0)
	if w := h.writes(); w != 0 {
		t.Errorf("%d Nomad writes after the abort, want none", w)
	}
}

// brokenWatcher fails at once, as a feed that cannot go on.
type brokenWatcher struct{}

func (brokenWatcher) Run(context.Context, nomad.WatchSink) error { return errors.New("watcher broke") }

func TestControllerReturnsWhenAFeedFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		c := New(Options{
			Reconciler: h.rec,
			Queue:      NewQueue(QueueOptions{BaseDelay: time.Millisecond, MaxDelay: 50 * time.Millisecond}),
			Store:      h.st,
			Watcher:    brokenWatcher{},
			Owner:      h.st.StoreID(),
			Backoff:    nomad.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond},
		})
		done := make(chan error, 1)
		go func() { done <- c.Run(t.Context()) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "watcher broke") {
				t.Errorf("Run = %v, want the watcher's error", err)
			}
		case <-time.After(time.Hour):
			t.Fatal("Run did not return after a feed failed")
		}
	})
}
