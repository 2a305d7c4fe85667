package reconcile

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// A Nomad server that vanished without a reset does not hold a worker
// for the ~15 minutes the kernel keeps the connection: every call the
// reconciler makes is bounded, and the failure is a transient one the
// worker retries with backoff.
func TestReconcileAgainstASilentNomadEndsAtTheRequestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.apply(box)
		h.mem.SetSilent(true)
		start := time.Now()
		_, err := h.rec.Reconcile(t.Context(), "default/box")
		// The request bound, and the status write that reports it (a
		// batched commit waits a couple of milliseconds for company).
		if took, bound := time.Since(start), nomad.DefaultRequestTimeout+100*time.Millisecond; took > bound {
			t.Errorf("reconcile returned after %s, want within %s: the %s request bound and a status write", took, bound, nomad.DefaultRequestTimeout)
		}
		if !errors.Is(err, nomad.ErrTransient) {
			t.Errorf("err = %v, want transient", err)
		}
	})
}

// stuckStore never answers a read of one key until released, as a loop
// wedged by a bug would not.
type stuckStore struct {
	*store.Store
	key     string
	release chan struct{}
}

func (s *stuckStore) Get(ctx context.Context, key string) (store.Record, error) {
	if key == s.key {
		select {
		case <-s.release:
		case <-ctx.Done():
			return store.Record{}, ctx.Err()
		}
	}
	return s.Store.Get(ctx, key)
}

func TestStalledNamesAWorkerStuckInOneReconcile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		ss := &stuckStore{Store: h.st, key: "default/box", release: make(chan struct{})}
		rec := NewReconciler(ss, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
		r := h.startController(func(o *Options) { o.Reconciler = rec; o.StallAfter = time.Minute })
		h.eventually("the initial list", r.c.InitialListDone)
		h.apply(box)
		time.Sleep(50 * time.Second)
		synctest.Wait()
		if err := r.c.Stalled(); err != nil {
			t.Fatalf("stalled after 50s with StallAfter 1m: %v", err)
		}
		time.Sleep(20 * time.Second)
		if err := r.c.Stalled(); err == nil {
			t.Fatal("a worker stuck in one reconcile for 70s is not reported")
		}
		close(ss.release)
		h.eventually("the sandbox running", h.allPhase([]string{"default/box"}, store.PhaseRunning))
		if err := r.c.Stalled(); err != nil {
			t.Errorf("still stalled once the reconcile finished: %v", err)
		}
	})
}

// Waiting for the write limiter is progress, not a stall: a low write
// rate must not make a leader give up its lock.
func TestWaitingForTheWriteLimitIsNotAStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		// One write every 90 s, after a burst of one: the second sandbox
		// waits that long for its turn, longer than StallAfter.
		lim := NewWriteLimiter(1.0/90, 1)
		rec := NewReconciler(h.st, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}, WriteLimiter: lim}, nil, h.now)
		r := h.startController(func(o *Options) { o.Reconciler = rec; o.StallAfter = time.Minute; o.Workers = 1 })
		h.eventually("the initial list", r.c.InitialListDone)
		h.apply(`sandbox "a" {
  image = "alpine:3"
}
sandbox "b" {
  image = "alpine:3"
}`)
		for range 100 {
			time.Sleep(time.Second)
			if err := r.c.Stalled(); err != nil {
				t.Fatalf("a worker waiting its turn at the write limiter counts as stalled: %v", err)
			}
		}
		h.eventually("both running", h.allPhase([]string{"default/a", "default/b"}, store.PhaseRunning))
	})
}
