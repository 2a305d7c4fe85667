// Package cluster owns running several controller instances as one: the
// instance that holds the leader lock catches its store up from the
// replicated copy, then reconciles and replicates; the others follow the
// copy and forward writes to the leader.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/leader"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Controller is one leadership term's reconcile loop (reconcile.Controller).
type Controller interface {
	Run(ctx context.Context) error
	InitialListDone() bool
	// Stalled reports a loop that no longer makes progress.
	Stalled() error
}

// Elector decides who leads (leader.Elector).
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context) error) error
	State() leader.State
}

// Replica is the replicated copy of the desired state (replica.Replica).
type Replica interface {
	CatchUp(ctx context.Context, localOwner string) (replica.Term, error)
	RunPush(ctx context.Context, rev uint64) error
	RunPull(ctx context.Context) error
	Push(ctx context.Context, keys []string) error
	Freshness() (time.Time, uint64)
}

// Store is the local store as the node uses it.
type Store interface {
	Apply(ctx context.Context, objs []store.Object, opts store.ApplyOptions) (store.ApplyResult, error)
	Delete(ctx context.Context, key string) (store.Record, error)
	Revision(ctx context.Context) (uint64, error)
}

// Config wires a Node.
type Config struct {
	Self    leader.Instance
	Elector Elector
	Replica Replica
	Store   Store
	// LocalOwner is the owner ID to seed a new replicated copy with: the
	// local store's, so that a controller that ran alone keeps its jobs.
	LocalOwner string
	// NewController builds the reconcile loop of a term for the owner ID
	// the replicated copy names. allowGC is false when the copy is not
	// known to be whole: the loop must then collect no garbage.
	NewController func(owner string, allowGC bool) (Controller, error)
	Logger        *slog.Logger
}

// Node is one instance of the controller.
type Node struct {
	cfg Config
	log *slog.Logger

	term atomic.Pointer[term]

	pullMu     sync.Mutex
	pullCancel context.CancelFunc
	pullDone   chan struct{}
}

// term is one leadership: its context ends when leadership does.
type term struct {
	ctx   context.Context
	owner string
	ctrl  Controller
}

// New makes a Node.
func New(cfg Config) *Node {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: log}
}

// Run takes part in the election until ctx ends: following the copy while
// another instance leads, leading when this one holds the lock.
func (n *Node) Run(ctx context.Context) error {
	n.startPull(ctx)
	defer n.stopPull()
	return n.cfg.Elector.Run(ctx, func(lctx context.Context) error { return n.lead(ctx, lctx) })
}

func (n *Node) startPull(ctx context.Context) {
	n.pullMu.Lock()
	defer n.pullMu.Unlock()
	if ctx.Err() != nil || n.pullCancel != nil {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	n.pullCancel, n.pullDone = cancel, done
	go func() {
		defer close(done)
		_ = n.cfg.Replica.RunPull(pctx)
	}()
}

func (n *Node) stopPull() {
	n.pullMu.Lock()
	cancel, done := n.pullCancel, n.pullDone
	n.pullCancel, n.pullDone = nil, nil
	n.pullMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// lead is one term: catch up, then reconcile and replicate until lctx
// ends. The store is not reconciled before it matches the copy, so a
// store that is empty or behind never purges a declared sandbox's job.
func (n *Node) lead(runCtx, lctx context.Context) error {
	n.stopPull()
	defer n.startPull(runCtx)

	var cu replica.Term
	backoff := time.Second
	for {
		var err error
		cu, err = n.cfg.Replica.CatchUp(lctx, n.cfg.LocalOwner)
		if err == nil {
			break
		}
		if lctx.Err() != nil {
			return nil
		}
		if errors.Is(err, replica.ErrStepAside) {
			n.log.Warn("not leading", "err", err)
			return err // the elector releases the lock and stands back
		}
		n.log.Error("cannot catch up from the replicated copy; not reconciling until it succeeds", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-lctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	rev, err := n.cfg.Store.Revision(lctx)
	if err != nil {
		return fmt.Errorf("read the store revision: %w", err)
	}
	ctrl, err := n.cfg.NewController(cu.Owner, cu.Complete)
	if err != nil {
		return err
	}
	// Both halves run on the term's context; when one fails the other is
	// stopped at once and waited for, so nothing of this term outlives it.
	tctx, cancel := context.WithCancelCause(lctx)
	defer cancel(nil)
	t := &term{ctx: tctx, owner: cu.Owner, ctrl: ctrl}
	n.term.Store(t)
	defer n.term.Store(nil)
	n.log.Info("leading: store caught up; reconciling", "owner", cu.Owner, "revision", rev, "copy_complete", cu.Complete)

	errs := make(chan error, 2)
	go func() { errs <- n.cfg.Replica.RunPush(tctx, rev) }()
	go func() { errs <- ctrl.Run(tctx) }()
	first := <-errs
	if first == nil && lctx.Err() == nil {
		first = errors.New("a leader loop returned early")
	}
	if lctx.Err() == nil {
		n.log.Error("leader loop failed; ending the term", "err", first)
		cancel(errTermFailed)
	}
	<-errs
	if lctx.Err() != nil {
		return nil
	}
	return first
}

var errTermFailed = errors.New("leadership term failed")

// Leading returns the context of the current term, if this instance
// leads and has caught up.
func (n *Node) Leading() (context.Context, bool) {
	t := n.term.Load()
	if t == nil || t.ctx.Err() != nil {
		return nil, false
	}
	return t.ctx, true
}

// Owner is the owner ID of the current term ("" when not leading).
func (n *Node) Owner() string {
	if t := n.term.Load(); t != nil {
		return t.owner
	}
	return ""
}

// Ready reports readiness: a leader once it has caught up and listed the
// jobs it owns, a follower once it has matched the copy.
func (n *Node) Ready() (bool, string) {
	st := n.cfg.Elector.State()
	if st.Self {
		t := n.term.Load()
		switch {
		case t == nil:
			return false, "leading; catching up from the replicated copy"
		case !t.ctrl.InitialListDone():
			return false, "leading; waiting for the initial list of owned Nomad jobs"
		}
		if err := t.ctrl.Stalled(); err != nil {
			return false, "leading, but the reconcile loop has stalled: " + err.Error()
		}
		return true, ""
	}
	if at, _ := n.cfg.Replica.Freshness(); at.IsZero() {
		return false, "following; not yet in sync with the replicated copy"
	}
	return true, ""
}

// Healthy is what the elector asks before it renews the lock: an error
// while this instance leads and its reconcile loop has stalled, so that
// the lock expires and another instance takes over.
func (n *Node) Healthy() error {
	if t := n.term.Load(); t != nil {
		return t.ctrl.Stalled()
	}
	return nil
}

// Self is this instance's ID.
func (n *Node) Self() string { return n.cfg.Self.ID }

// Leader is the leader as this instance knows it.
//
// While this instance holds the lock but is still catching up it is not
// yet Self: it answers nothing as the leader until its store is current.
func (n *Node) Leader() api.Leader {
	st := n.cfg.Elector.State()
	_, caughtUp := n.Leading()
	return api.Leader{ID: st.Leader.ID, Address: st.Leader.Address, Self: st.Self && caughtUp}
}

// Freshness says how current the local store is: a leader's is the
// source, so it is current now.
func (n *Node) Freshness() api.Freshness {
	at, idx := n.cfg.Replica.Freshness()
	if _, ok := n.Leading(); ok {
		at = time.Now()
	}
	return api.Freshness{SyncedAt: at, Index: idx}
}

// ErrNotReplicated wraps a write that the leader committed to its own
// store but could not yet copy to Nomad Variables.
var ErrNotReplicated = errors.New("committed on the leader but not yet replicated to Nomad Variables (the leader retries while it leads; a new leader does not know the change, so retry the request)")

// Store returns the store the API writes through: writes go only to a
// caught-up leader, and return once replicated.
func (n *Node) Store(local *store.Store) api.Store { return &apiStore{Store: local, n: n} }

type apiStore struct {
	*store.Store
	n *Node
}

// within returns a context that ends with ctx or with the term.
func within(ctx, termCtx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(termCtx, func() { cancel(api.ErrNotLeader) })
	return c, func() { stop(); cancel(nil) }
}

func (s *apiStore) Apply(ctx context.Context, objs []store.Object, opts store.ApplyOptions) (store.ApplyResult, error) {
	if opts.DryRun {
		return s.Store.Apply(ctx, objs, opts)
	}
	tctx, ok := s.n.Leading()
	if !ok {
		return store.ApplyResult{}, api.ErrNotLeader
	}
	ctx, cancel := within(ctx, tctx)
	defer cancel()
	res, err := s.Store.Apply(ctx, objs, opts)
	if err != nil {
		return res, err
	}
	// Every key, unchanged ones too: a retry of an apply whose first
	// replication failed finds the store unchanged, and must still not
	// answer before the copy has it. Keys the copy already holds as they
	// are cost nothing.
	keys := make([]string, 0, len(res.Objects))
	for _, o := range res.Objects {
		keys = append(keys, o.Key)
	}
	if err := s.n.cfg.Replica.Push(ctx, keys); err != nil {
		if errors.Is(context.Cause(ctx), api.ErrNotLeader) {
			return res, fmt.Errorf("%w: %w", api.ErrNotLeader, ErrNotReplicated)
		}
		return res, fmt.Errorf("%w: %w (%w)", ErrNotReplicated, err, api.ErrUnavailable)
	}
	return res, nil
}

func (s *apiStore) Delete(ctx context.Context, key string) (store.Record, error) {
	tctx, ok := s.n.Leading()
	if !ok {
		return store.Record{}, api.ErrNotLeader
	}
	ctx, cancel := within(ctx, tctx)
	defer cancel()
	rec, err := s.Store.Delete(ctx, key)
	if err != nil {
		return rec, err
	}
	if err := s.n.cfg.Replica.Push(ctx, []string{key}); err != nil {
		if errors.Is(context.Cause(ctx), api.ErrNotLeader) {
			return rec, fmt.Errorf("%w: %w", api.ErrNotLeader, ErrNotReplicated)
		}
		return rec, fmt.Errorf("%w: %w (%w)", ErrNotReplicated, err, api.ErrUnavailable)
	}
	return rec, nil
}

// Claim claims on the leader and returns once the claim is replicated: a
// claim answered is one the next leader knows, so that it never hands the
// same sandbox out twice.
func (s *apiStore) Claim(ctx context.Context, key string, opts store.ClaimOptions) (store.Record, error) {
	tctx, ok := s.n.Leading()
	if !ok {
		return store.Record{}, api.ErrNotLeader
	}
	ctx, cancel := within(ctx, tctx)
	defer cancel()
	rec, err := s.Store.Claim(ctx, key, opts)
	if err != nil {
		return rec, err
	}
	if err := s.n.cfg.Replica.Push(ctx, []string{rec.Key()}); err != nil {
		// Unanswered, the claim would hold the sandbox for nobody: it
		// is deleted instead (the deletion replicates like any), and the
		// pool makes another.
		if _, derr := s.Store.DeleteAt(context.WithoutCancel(ctx), rec.Key(), rec.ResourceVersion); derr != nil {
			s.n.log.Warn("delete a claimed sandbox whose claim was not replicated", "sandbox", rec.Key(), "err", derr)
		}
		if errors.Is(context.Cause(ctx), api.ErrNotLeader) {
			return rec, fmt.Errorf("%w: %w", api.ErrNotLeader, ErrNotReplicated)
		}
		return rec, fmt.Errorf("%w: %w (%w)", ErrNotReplicated, err, api.ErrUnavailable)
	}
	return rec, nil
}
