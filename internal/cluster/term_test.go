package cluster_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/cluster"
	"github.com/agentkernel/agentkernel-controller/internal/leader"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// oneTerm is an elector that leads once and reports what lead returned.
type oneTerm struct{ got chan error }

func (e oneTerm) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	e.got <- lead(ctx)
	return nil
}
func (oneTerm) State() leader.State { return leader.State{Self: true} }

// failingReplica catches up, then its push loop fails at once.
type failingReplica struct{ catchUpErr error }

func (r failingReplica) CatchUp(context.Context, string) (replica.Term, error) {
	return replica.Term{Owner: "o", Complete: true}, r.catchUpErr
}
func (failingReplica) RunPush(context.Context, uint64) error { return errors.New("push loop broke") }
func (failingReplica) RunPull(ctx context.Context) error     { <-ctx.Done(); return nil }
func (failingReplica) Push(context.Context, []string) error  { return nil }
func (failingReplica) Freshness() (time.Time, uint64)        { return time.Time{}, 0 }

// slowController takes a while (of the bubble's fake time) to stop and says whether it still runs.
type slowController struct{ running atomic.Bool }

func (c *slowController) Run(ctx context.Context) error {
	c.running.Store(true)
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	c.running.Store(false)
	return nil
}
func (c *slowController) InitialListDone() bool { return true }
func (c *slowController) Stalled() error        { return nil }

type revStore struct{ cluster.Store }

func (revStore) Revision(context.Context) (uint64, error) { return 1, nil }

func TestFailedTermStopsBothHalvesBeforeReturning(t *testing.T) {
	synctest.Test(t, testFailedTermStopsBothHalvesBeforeReturning)
}

func testFailedTermStopsBothHalvesBeforeReturning(t *testing.T) {
	ctrl := &slowController{}
	got := make(chan error, 1)
	n := cluster.New(cluster.Config{
		Elector: oneTerm{got: got}, Replica: failingReplica{}, Store: revStore{},
		NewController: func(string, bool) (cluster.Controller, error) { return ctrl, nil },
	})
	_ = n.Run(t.Context())
	err := <-got
	if err == nil || err.Error() != "push loop broke" {
		t.Errorf("lead returned %v, want the push loop's error", err)
	}
	if ctrl.running.Load() {
		t.Error("lead returned while the reconcile loop of its term still ran")
	}
}

func TestStepAsideEndsTheTerm(t *testing.T) {
	got := make(chan error, 1)
	built := false
	n := cluster.New(cluster.Config{
		Elector: oneTerm{got: got}, Replica: failingReplica{catchUpErr: replica.ErrStepAside}, Store: revStore{},
		NewController: func(string, bool) (cluster.Controller, error) { built = true; return &slowController{}, nil },
	})
	_ = n.Run(t.Context())
	if err := <-got; !errors.Is(err, replica.ErrStepAside) {
		t.Errorf("lead returned %v, want ErrStepAside so the elector lets go", err)
	}
	if built {
		t.Error("a reconcile loop was built by an instance that stepped aside")
	}
}

// recordingReplica catches up and records every Push.
type recordingReplica struct {
	failingReplica
	mu     sync.Mutex
	pushes [][]string
	fail   bool
}

func (r *recordingReplica) CatchUp(context.Context, string) (replica.Term, error) {
	return replica.Term{Owner: "o", Complete: true}, nil
}
func (r *recordingReplica) RunPush(ctx context.Context, _ uint64) error { <-ctx.Done(); return nil }
func (r *recordingReplica) Push(_ context.Context, keys []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushes = append(r.pushes, keys)
	if r.fail {
		return errors.New("Nomad is down")
	}
	return nil
}

// leadsForever is an elector that leads once, until ctx ends.
type leadsForever struct{}

func (leadsForever) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	return lead(ctx)
}
func (leadsForever) State() leader.State { return leader.State{Self: true} }

func TestRetriedApplyIsReplicatedBeforeItSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := store.Open(t.TempDir(), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		rep := &recordingReplica{fail: true}
		n := cluster.New(cluster.Config{
			Elector: leadsForever{}, Replica: rep, Store: st,
			NewController: func(string, bool) (cluster.Controller, error) { return &slowController{}, nil },
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { _ = n.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		synctest.Wait()
		objs := sandboxes(1, "img:1")
		if _, err := n.Store(st).Apply(t.Context(), objs, store.ApplyOptions{}); !errors.Is(err, cluster.ErrNotReplicated) {
			t.Fatalf("first apply = %v, want ErrNotReplicated", err)
		}
		rep.mu.Lock()
		rep.fail = false
		rep.mu.Unlock()
		res, err := n.Store(st).Apply(t.Context(), objs, store.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Changed() {
			t.Fatal("the retry changed the store; the test wants it unchanged")
		}
		rep.mu.Lock()
		defer rep.mu.Unlock()
		if last := rep.pushes[len(rep.pushes)-1]; len(last) != 1 || last[0] != "default/s00" {
			t.Errorf("the retry pushed %v, want default/s00 again", last)
		}
	})
}
